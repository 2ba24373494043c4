"""The service's onnxruntime session: its threads do not spin (service.inference.open_session)."""

from pathlib import Path

from service.inference import KeywordModel

REPO = Path(__file__).resolve().parents[1]


def test_the_service_session_threads_do_not_spin_and_keep_the_configured_count():
    model = KeywordModel.load(REPO / "service" / "models" / "kws10.onnx", intra_op_threads=2, inter_op_threads=1)
    options = model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1

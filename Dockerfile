# syntax=docker/dockerfile:1
# Keyword-recognition service image: only what serving needs (no torch, no training code).
#   docker build -t kws .            docker run -p 8000:8000 kws
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT=""
ENV PIP_CERT=${PIP_CERT} PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! command -v python3 >/dev/null || ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
# Dependencies first, from pyproject.toml and the pinned versions alone, so a code change does not
# re-download them.
COPY pyproject.toml ./
COPY requirements/constraints.txt requirements/
RUN python3 -m venv /opt/kws \
 && /opt/kws/bin/pip install --upgrade pip \
 && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > /tmp/requirements.txt \
 && /opt/kws/bin/pip install -r /tmp/requirements.txt -c requirements/constraints.txt
COPY README.md ./
# The two packages the service needs, whole (model/'s torch modules are never imported by the service; the
# layering test proves it). pyproject.toml lists every package; what is not copied here is not installed.
COPY model/ model/
COPY service/ service/
# Then the code. After the install, drop what serving never loads: pip and setuptools, onnxruntime's C-API
# library (the Python binding links its own copy) and its model-conversion tools, and the packages' test
# suites. Bytecode is compiled here, so a read-only root filesystem costs nothing at start-up.
RUN /opt/kws/bin/pip install --no-deps ".[serve]" \
 && /opt/kws/bin/pip uninstall --yes setuptools pip \
 && ORT=$(echo /opt/kws/lib/python3*/site-packages/onnxruntime) \
 && rm -rf "$ORT"/capi/libonnxruntime.so.* "$ORT"/transformers "$ORT"/quantization "$ORT"/tools \
 && find /opt/kws \( -name "__pycache__" -o -name tests \) -type d -prune -exec rm -rf {} + \
 && /opt/kws/bin/python -m compileall -q /opt/kws

FROM ${BASE_IMAGE} AS runtime
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /usr/share/doc/*; \
    fi \
 && useradd --system --uid 10001 --no-create-home kws
COPY --from=build /opt/kws /opt/kws
ENV PATH=/opt/kws/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KWS_HOST=0.0.0.0 KWS_PORT=8000 KWS_JSON_LOGS=true
USER kws
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["kws-serve"]

"""Known vulnerabilities in the installed dependencies: pip-audit, then a fallback where it cannot look.

Run by ``.ci/run`` before the tests, with the venv's python: ``$VENV/bin/python scripts/audit.py``.
pip-audit asks PyPI's per-release JSON (``/pypi/<name>/<version>/json``) for each installed
distribution; the vulnerabilities listed in ``requirements/audit-exceptions.txt`` (one ID per line, each
with the reason it is accepted) are ignored. Where the per-release document cannot be had (a PyPI
mirror that serves only the project document, as on this project's machines), the project document
(``/pypi/<name>/json``) lists the vulnerabilities of the latest release, which settles every pin that
is the latest release; any other pin is reported as not audited. Exit status 1 on any vulnerability
that is not accepted, else 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

EXCEPTIONS = Path(__file__).resolve().parents[1] / "requirements" / "audit-exceptions.txt"


def accepted_vulnerabilities() -> set[str]:
    lines = EXCEPTIONS.read_text().splitlines() if EXCEPTIONS.exists() else []
    return {line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()}


def latest_release_vulnerabilities(name: str, version: str) -> list[dict] | None:
    """The vulnerabilities PyPI lists for ``name``, or None unless ``version`` is the latest release."""
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as response:
            document = json.load(response)
    except OSError:
        return None
    if document["info"]["version"] != version.split("+")[0]:
        return None
    return document.get("vulnerabilities") or []


def main() -> int:
    accepted = accepted_vulnerabilities()
    command = [sys.executable, "-m", "pip_audit", "--vulnerability-service", "pypi", "--skip-editable",
               "--progress-spinner", "off", "--format", "json", *(f"--ignore-vuln={v}" for v in sorted(accepted))]
    run = subprocess.run(command, check=False, capture_output=True, text=True)  # exit 1 means "found": read the JSON
    try:
        report = json.loads(run.stdout)
    except ValueError:
        print(f"pip-audit failed (exit {run.returncode}):\n{run.stderr}", file=sys.stderr)
        return 1
    found = {(d["name"], d["version"], v["id"]) for d in report["dependencies"] for v in d.get("vulns", [])}
    unresolved = [(d["name"], metadata.version(d["name"])) for d in report["dependencies"] if "skip_reason" in d
                  and "editable" not in d["skip_reason"]]  # a skipped entry carries no version: this venv's
    audited = sum("skip_reason" not in d for d in report["dependencies"])
    with ThreadPoolExecutor(8) as pool:
        fallback = list(pool.map(lambda dep: (dep, latest_release_vulnerabilities(*dep)), unresolved))
    not_audited = sorted(f"{name}=={version}" for (name, version), vulns in fallback if vulns is None)
    for (name, version), vulns in fallback:
        found |= {(name, version, v["id"]) for v in vulns or [] if not accepted & {v["id"], *v.get("aliases", [])}}
    print(f"audit: {audited} distributions checked by pip-audit, {len(unresolved) - len(not_audited)} as the latest "
          f"release through PyPI's project document, {len(not_audited)} not audited"
          + (f" ({', '.join(not_audited)})" if not_audited else "") + f"; {len(accepted)} accepted vulnerabilities")
    for name, version, vulnerability in sorted(found):
        print(f"VULNERABLE: {name} {version}: {vulnerability}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

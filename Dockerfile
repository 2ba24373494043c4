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
COPY pyproject.toml README.md ./
COPY model/__init__.py model/config_io.py model/features.py model/
COPY service/ service/
RUN python3 -m venv /opt/kws \
 && /opt/kws/bin/pip install --upgrade pip \
 && /opt/kws/bin/pip install ".[serve]" \
 && find /opt/kws -name "__pycache__" -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*; \
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

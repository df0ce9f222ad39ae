# creed CPU base: Python 3.11 in a virtualenv owned by a non-root user. The generate, filter, mix and
# analyze images build on it (train and eval too, in a CPU-only build). Build from the repository root
# (images/build.sh, or see images/README.md):
#   docker build -f images/base-cpu.Dockerfile -t ghcr.io/creed/creed-base-cpu:TAG .
# PYTHON_IMAGE: any Debian-based image with python3 (>= 3.11) and its venv module, for example a local
# debootstrap of bookworm where no registry is reachable (scripts/test_images.py builds one).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/creed \
    HF_HOME=/home/creed/.cache/huggingface \
    CREED_LOG_FORMAT=json

# uid/gid 1000: the workflow's pod securityContext runs as 1000 (workflows/argo.py).
RUN groupadd --gid 1000 creed \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/creed --shell /usr/sbin/nologin creed \
    && python3 -m venv /opt/venv \
    && chown -R creed:creed /opt/venv

USER 1000:1000
WORKDIR /home/creed

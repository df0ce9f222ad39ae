# creed CUDA base: CUDA 12.8 runtime + cuDNN, Python 3.11 (a standalone build installed by uv, so no
# apt packages are needed) and the CUDA build of torch. The train and eval images build on it.
#   docker build -f images/base-cuda.Dockerfile -t ghcr.io/creed/creed-base-cuda:TAG .
# CUDA_IMAGE / UV_IMAGE: other (for example mirrored) bases. An optional BuildKit secret `ca` is the CA
# bundle for uv and pip behind a TLS-intercepting proxy (images/build.sh CA_FILE=); never in a layer.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.22
FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/creed \
    HF_HOME=/home/creed/.cache/huggingface \
    CREED_LOG_FORMAT=json

COPY --from=uv /uv /usr/local/bin/uv

# The CUDA image ships an `ubuntu` user with uid 1000; creed takes that uid (pods run as 1000).
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi; \
    userdel --remove ubuntu 2>/dev/null; \
    groupadd --gid 1000 creed \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/creed --shell /usr/sbin/nologin creed \
    && uv python install 3.11.11 \
    && uv venv --python 3.11.11 --seed /opt/venv \
    && uv pip install --python /opt/venv/bin/python --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && chown -R creed:creed /opt/venv

USER 1000:1000
WORKDIR /home/creed

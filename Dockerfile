# vesselseg: CPU image by default. For CUDA, build on a CUDA runtime base with a CUDA torch:
#   docker build --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 -t vesselseg:cuda .
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    VESSELSEG_CACHE_DIR=/work/.cache/vesselseg

# git: DVC and MLflow record commits; its version follows the base image's security updates
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/vesselseg
COPY pyproject.toml constraints.txt README.md ./
COPY vesselseg ./vesselseg
RUN python -m pip install --extra-index-url "${TORCH_INDEX}" -c constraints.txt . \
    && useradd --create-home --uid 1000 vesselseg \
    && mkdir -p /work \
    && chown vesselseg /work

COPY params.yaml dvc.yaml /opt/vesselseg/
USER 1000
WORKDIR /work
VOLUME ["/work/data", "/work/mlruns"]
ENTRYPOINT ["vesselseg"]
CMD ["--help"]

# syntax=docker/dockerfile:1
# clipsearch images, installed from setup.cfg. Two targets:
#
#   docker build -t clipsearch:cpu .                # default (last stage): CPU torch, faiss-cpu
#   docker build --target gpu -t clipsearch:gpu .   # CUDA torch, faiss-gpu-cu12
#
# Both run as the unprivileged user `clipsearch` with the data directory at /data
# (SQLite store or nothing when CLIPSEARCH_DB_URL names PostgreSQL, FAISS index files,
# model cache). The entrypoint is the `clipsearch` command; the default command serves
# the web page and API on port 8000 of every interface of the container:
#
#   docker run --rm -p 127.0.0.1:8000:8000 -v clipsearch-data:/data \
#       -v "$HOME/Pictures:/library:ro" clipsearch:cpu
#   docker run --rm -v clipsearch-data:/data -v "$HOME/Pictures:/library:ro" \
#       clipsearch:cpu index /library
#
# docker-compose.yml runs the same image with PostgreSQL; docker-compose.gpu.yml the GPU one.

ARG PYTHON_IMAGE=python:3.11-slim

# --- common base: user, directories, environment, health check ------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLIPSEARCH_DATA_DIR=/data \
    CLIPSEARCH_PORT=8000 \
    HF_HOME=/data/cache/huggingface \
    TORCH_HOME=/data/cache/torch
# A fixed uid/gid, so that bind-mounted data directories can be chowned to match.
RUN groupadd --system --gid 10001 clipsearch \
    && useradd --system --uid 10001 --gid clipsearch --create-home \
       --home-dir /home/clipsearch --shell /usr/sbin/nologin clipsearch \
    && mkdir -p /data /library \
    && chown clipsearch:clipsearch /data
COPY docker/healthcheck.py /usr/local/bin/clipsearch-healthcheck
WORKDIR /data
EXPOSE 8000
# Workers load the model before they answer: give them a while before counting failures.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/bin/clipsearch-healthcheck"]
ENTRYPOINT ["clipsearch"]
CMD ["serve", "--host", "0.0.0.0"]

# --- the project's sources, only mounted into the install steps below -----------------
FROM base AS source
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY search/ search/
COPY indexer/ indexer/
COPY web/ web/
COPY clipsearch/ clipsearch/

# --- GPU image: CUDA torch and faiss-gpu-cu12 (needs the NVIDIA container toolkit) ------
FROM base AS gpu
# PyPI's Linux x86_64 torch wheels are the CUDA builds (CUDA libraries come as pip packages).
RUN pip install torch==2.14.1 torchvision==0.29.1
RUN --mount=type=bind,from=source,source=/src,target=/src,rw \
    pip install "/src[gpu,postgres,lite2]"
USER clipsearch

# --- CPU image (the default target) -----------------------------------------------------
FROM base AS cpu
# Official CPU-only torch wheels: no CUDA libraries, a far smaller image. This index URL
# is used for building this image only; it is not used on the project's own machines.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        torch==2.14.1 torchvision==0.29.1
RUN --mount=type=bind,from=source,source=/src,target=/src,rw \
    pip install "/src[cpu,postgres,openvino,lite2]"
USER clipsearch

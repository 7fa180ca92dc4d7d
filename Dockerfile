FROM python:3.11-slim

# git: mirrors and snapshots are read with git itself. bubblewrap: the renderer box (Kustomize and
# Helm run with no network and no file but the exported tree; the pod needs user namespaces).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 gitops

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY config ./config
RUN pip install --no-cache-dir .

# Numeric, so pods with runAsNonRoot can verify it.
USER 10001
ENV GITOPS_BOT_DATA_DIR=/home/gitops/data PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8080\")}/healthz', timeout=2)" || exit 1
CMD ["gitops-bot", "serve"]

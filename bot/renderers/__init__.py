"""Renderers turn a directory of sources into Kubernetes manifests."""

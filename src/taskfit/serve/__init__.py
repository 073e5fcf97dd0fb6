"""``taskfit serve``: the fine-tuned adapters behind OpenAI's chat-completions API."""

from taskfit.serve.config import ServeSpec, hash_key, load_serve_config, new_key

__all__ = ["ServeSpec", "hash_key", "load_serve_config", "new_key", "serve"]


def serve(spec: ServeSpec, status=None) -> None:
    """Load the models, then serve until interrupted (SIGINT/SIGTERM finish the requests in flight)."""
    import uvicorn

    from taskfit.serve.app import create_app

    app = create_app(spec, status=status)
    uvicorn.run(app, host=spec.host, port=spec.port, log_level="info",
                timeout_graceful_shutdown=int(spec.limits.timeout_s))

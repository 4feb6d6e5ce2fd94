"""What the gateway tells the operator's tools: Prometheus metrics (``requests``, ``pod``, ``health``, ``push``) and traces (``tracing``)."""

"""What the gateway tells the operator's tools: traces (``tracing``)."""

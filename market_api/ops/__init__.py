"""What operators ask of a replica: ``/metrics`` (Prometheus) and ``/ready`` (readiness)."""

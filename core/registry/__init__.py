"""Model registry access (MLflow): browse, inspect, promote."""

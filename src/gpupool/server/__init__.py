"""The control plane: settings, database, services, background loop, REST API."""

"""Use cases. Each function takes the Database, owns its transaction, and raises
ServiceError subclasses that the API turns into 4xx answers."""

"""Service layer: one function per use case, given its unit of work and the time (`now`)."""

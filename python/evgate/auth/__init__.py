"""auth: who may charge and who may operate — credentials, id-tag decisions, authorizers."""

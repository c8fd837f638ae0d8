"""The data endpoints: routes, parameters, questions, the service, the SQL, the schemas."""

"""A web app signs users in and calls a protected API for them, authenticating itself with a managed identity used
as a federated credential (no secret anywhere): the web-app-calls-API reference scenario, runnable locally.

``python -m example_apps.webapp_calls_api`` runs FakeEntra (with its managed-identity endpoint), the API and the
web app together; see README.md.
"""

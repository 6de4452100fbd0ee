"""An MCP server protected by Entra ID: ``python -m example_apps.mcp_server``."""

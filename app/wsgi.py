"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:server`` (configuration from the environment)."""

from app.factory import create_app

application = create_app()
server = application.server

# One image, four roles (web, worker, beat, migrate): see docker-compose.yml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings.base

WORKDIR /app
RUN useradd --create-home --uid 1000 allmile
COPY pyproject.toml README.md ./
COPY config ./config
COPY shipments ./shipments
COPY routing ./routing
COPY dispatch ./dispatch
COPY tracking ./tracking
COPY demo ./demo
COPY templates ./templates
COPY static ./static
COPY manage.py ./
RUN pip install . && \
    DEBUG=true SECRET_KEY=build-only python manage.py collectstatic --noinput -v0 && \
    mkdir -p /app/.local/media && chown -R allmile /app/.local
USER allmile
EXPOSE 8000
CMD ["uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--proxy-headers"]

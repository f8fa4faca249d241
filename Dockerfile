# The image every service of docker-compose.yml runs: the official Airflow 3 image with this project
# and its pinned dependencies installed, so no container installs anything at start-up.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.lock pyproject.toml README.md /opt/sme-dossier/
COPY --chown=airflow:root dossier /opt/sme-dossier/dossier
COPY --chown=airflow:root connectors /opt/sme-dossier/connectors
COPY --chown=airflow:root evaluation /opt/sme-dossier/evaluation
COPY --chown=airflow:root expectations /opt/sme-dossier/expectations
COPY --chown=airflow:root warehouse /opt/sme-dossier/warehouse
COPY --chown=airflow:root dags /opt/sme-dossier/dags

RUN pip install --no-cache-dir -r /opt/sme-dossier/requirements.lock \
        "apache-airflow-providers-celery" "apache-airflow==3.3.2" \
    && pip install --no-cache-dir --no-deps /opt/sme-dossier

WORKDIR /opt/sme-dossier

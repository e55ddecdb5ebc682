# Stand-in for apache/airflow:3.3.2-python3.11, made from the local Python
# base (scripts/stack): the same user (airflow, uid 50000, gid 0), the same
# AIRFLOW_HOME, Airflow and its task SDK at the versions the tests pin, and
# pip on PATH installing where Airflow is.
FROM quiver-local/python:3.11
ARG AIRFLOW_VERSION=3.3.2
ARG TASK_SDK_VERSION=1.3.2
RUN useradd --uid 50000 --gid 0 --create-home --shell /bin/bash airflow \
 && mkdir -p /opt/airflow && chown airflow:0 /opt/airflow \
 && python3 -m venv /home/airflow/.venv && chown -R airflow:0 /home/airflow/.venv
USER 50000:0
ENV PATH=/home/airflow/.venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "apache-airflow-task-sdk==${TASK_SDK_VERSION}"
WORKDIR /opt/airflow

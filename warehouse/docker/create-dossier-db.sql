-- The warehouse's own database and role beside Airflow's metadata database (docker-compose).
CREATE ROLE dossier LOGIN PASSWORD 'dossier';
CREATE DATABASE dossier OWNER dossier;

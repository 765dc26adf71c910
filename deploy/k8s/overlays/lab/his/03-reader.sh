#!/bin/bash
# Runs once, on an empty data directory (mariadb image's docker-entrypoint-initdb.d):
# the lookup's SELECT-only user on the two HIS databases.
set -euo pipefail
docker_process_sql <<EOSQL
CREATE USER IF NOT EXISTS 'reader'@'%' IDENTIFIED BY '${HIS_READER_PASSWORD}';
GRANT SELECT ON pacsdb_his.* TO 'reader'@'%';
GRANT SELECT ON rsabt201107.* TO 'reader'@'%';
EOSQL

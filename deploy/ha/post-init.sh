#!/bin/sh
# Patroni's post_init (run once on the first primary, with a superuser connection string): the
# ledger's role and database. The password comes from the container's environment.
set -eu
psql "$1" -v ON_ERROR_STOP=1 -v pw="${LEDGER_DB_PASSWORD:-ledger}" <<'SQL'
CREATE ROLE ledger LOGIN PASSWORD :'pw';
CREATE DATABASE ledger OWNER ledger;
SQL

-- Per table of the ledger database: its rows and a checksum of them, one line each,
-- "TABLE<tab>schema.table<tab>rows<tab>checksum" (psql -At reads this file; \gexec runs the
-- query the SELECT writes for each table). backup.sh runs it in the transaction whose snapshot
-- pg_dump reads, so it describes exactly the rows of the dump; backup-verify.sh runs it in the
-- scratch database the dump was restored into. The checksum is order-free (sums of each row's
-- MD5, in two 60-bit halves; the sums are numeric, so they do not overflow) and needs no
-- memory for the whole table.
SELECT format(
    'SELECT %L || E''\t'' || count(*) || E''\t'' || md5('
    'coalesce(sum((''x'' || substr(h, 1, 15))::bit(60)::bigint), 0) || ''/'' || '
    'coalesce(sum((''x'' || substr(h, 16, 15))::bit(60)::bigint), 0)) '
    'FROM (SELECT md5(jafar_row_::text) AS h FROM %I.%I jafar_row_) AS rows_',
    'TABLE' || E'\t' || quote_ident(table_schema) || '.' || quote_ident(table_name),
    table_schema, table_name)
FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
ORDER BY table_schema, table_name
\gexec

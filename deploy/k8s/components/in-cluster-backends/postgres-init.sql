-- One database per service that keeps its data in PostgreSQL, as scripts/run-distributed.sh
-- makes them. Run once, by the postgres image, when its data directory is first created
-- (compose.yaml and the dev overlay's StatefulSet both mount this file). A server initialised
-- before a database was added here does not run it again: create the new one by hand
-- (deploy/README.md, "Adding a service to a running environment").
CREATE DATABASE fabrikam_package;
CREATE DATABASE fabrikam_dronescheduler;
CREATE DATABASE fabrikam_ingestion;
CREATE DATABASE fabrikam_workflow;
CREATE DATABASE fabrikam_deliveryhistory;
CREATE DATABASE fabrikam_account;

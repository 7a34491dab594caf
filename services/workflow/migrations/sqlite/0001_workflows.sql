-- One row per delivery: its workflow's status, deadline and document (steps, request, reason).
CREATE TABLE workflows (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    status      TEXT NOT NULL,
    complete_by INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    doc         TEXT NOT NULL
);
-- The supervisor's scan: running workflows past their deadline, and unfinished compensations.
CREATE INDEX workflows_by_status_deadline ON workflows (status, complete_by);

-- Leases: which process may act as the supervisor, until when.
CREATE TABLE workflow_leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

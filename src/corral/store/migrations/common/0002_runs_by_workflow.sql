-- `corral runs list --workflow NAME` (and the API's filter): runs of one workflow, newest first.

CREATE INDEX runs_workflow_created ON runs (workflow, created_at);

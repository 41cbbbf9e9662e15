-- +goose Up
-- "action X within a time window" walked every row of the action on SQLite
-- (the planner picked audit_action_pos); this index answers it directly.
CREATE INDEX audit_action_time ON audit (action, occurred_at, pos_commit, pos_prepare);

-- +goose Down
DROP INDEX audit_action_time;

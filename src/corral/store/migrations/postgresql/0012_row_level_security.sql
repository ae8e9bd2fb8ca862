-- Row-level security backs the server's tenant filter (`corral.store.tenant_scope`): a request's
-- store calls run as the role corral_tenant with the setting corral.tenant naming the caller's
-- tenant, and these policies keep such a transaction to that tenant's rows, so a query that
-- forgot its `WHERE tenant = …` returns or changes nothing of another tenant. Every other
-- session (workers, the CLI, the engine) sees every row: the only policy that applies to it is
-- `USING (true)`, which the planner drops, so the engine pays nothing per row.
--
-- A table added later with a tenant column needs the same two policies and both ALTERs;
-- tests/store/test_row_level_security.py fails for one that has not got them.

-- The role is cluster-wide: another schema, another database or a concurrent migration may have
-- made it already. A migrating user who may not create roles is told what to ask for.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'corral_tenant') THEN
        BEGIN
            CREATE ROLE corral_tenant NOLOGIN NOINHERIT;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'row-level security needs the role corral_tenant, and % may not create roles: as a superuser, run CREATE ROLE corral_tenant NOLOGIN NOINHERIT, then migrate again (docs/operations.md, "Row-level security")', current_user;
        END;
    END IF;
END
$$;

-- The user creating the role (PostgreSQL 16 and later: with ADMIN OPTION only) must be able to
-- switch to it, without inheriting it: a session that inherited corral_tenant would be bound by
-- its policies without a tenant set, and see nothing. PostgreSQL 15 and older cannot grant
-- without inheritance: there the operator grants it (docs/operations.md), and the store refuses
-- to open for a user that inherits the role.
DO $$
BEGIN
    -- Nested: the privilege 'SET' is not known to pg_has_role before PostgreSQL 16.
    IF current_setting('server_version_num')::int >= 160000
        AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    THEN
        IF NOT pg_has_role(current_user, 'corral_tenant', 'SET') THEN
            BEGIN
                EXECUTE format('GRANT corral_tenant TO %I WITH INHERIT FALSE, SET TRUE', current_user);
            EXCEPTION
                WHEN insufficient_privilege THEN
                    NULL;
            END;
        END IF;
    END IF;
END
$$;

-- What a scoped transaction may touch: the schema's tables (the policies below then narrow the
-- tenant tables to one tenant), the identity sequences their inserts draw from, and the same for
-- tables later migrations create.
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO corral_tenant', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO corral_tenant', current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO corral_tenant', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO corral_tenant', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO corral_tenant', current_schema());
END
$$;

-- Every table of this schema with a tenant column: RLS on, also for the tables' owner (FORCE).
-- corral_unscoped (permissive, everyone) lets every session through; corral_tenant_only
-- (restrictive, corral_tenant only) is ANDed to it for a scoped transaction: a plain column
-- comparison, which an index on tenant serves. WITH CHECK: a scoped write cannot land a row in
-- another tenant. An unset setting reads as NULL (or '' once set on a connection): no rows.
DO $$
DECLARE
    tenant_table regclass;
BEGIN
    FOR tenant_table IN
        SELECT c.oid::regclass
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
            AND c.relkind IN ('r', 'p')
            AND a.attname = 'tenant'
            AND NOT a.attisdropped
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('CREATE POLICY corral_unscoped ON %s USING (true) WITH CHECK (true)', tenant_table);
        EXECUTE format(
            'CREATE POLICY corral_tenant_only ON %s AS RESTRICTIVE TO corral_tenant'
            ' USING (tenant = current_setting(''corral.tenant'', true))'
            ' WITH CHECK (tenant = current_setting(''corral.tenant'', true))',
            tenant_table
        );
    END LOOP;
END
$$;

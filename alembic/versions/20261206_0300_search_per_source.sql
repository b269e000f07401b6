-- Row-level security for the SkillMeat marketplace tables.
--
-- Applied by an Alembic revision that carries a frozen copy of this file
-- (alembic/versions/<revision>.sql); tests fail if the two differ. To change a
-- policy, edit this file AND add a new revision with the new copy.
--
-- Identity: SET LOCAL ROLE skillmeat_app + set_config('skillmeat.user_id', <uuid>, true)
--           + set_config('skillmeat.user_proof', <proof>, true). The proof is an
--           HMAC-SHA256 over '<uuid>.<expires>' with a key that only the definer's
--           helper can read (skillmeat_private.identity_keys): SQL inside a request
--           cannot claim another user. skillmeat.core.database.identity makes proofs.
-- Admin:    SET LOCAL ROLE skillmeat_admin (separate policies, so the tenant
--           policies stay index conditions; no "is_admin() OR ..." in them).
-- Worker:   SET LOCAL ROLE skillmeat_worker (the scan workers' pool): every source's
--           scan configuration, the scan queue, and the catalog's sync columns; no
--           memberships, no project names, never a rename or a delete of a project
--           or a source (its own policies, at the end of this file).
-- Membership checks have the form  col = ANY ((SELECT helper())::uuid[]):  an
-- InitPlan run once per statement, which the planner can use as an index
-- condition (a per-row function, IN (SELECT ...) or EXISTS becomes a filter).

-- ---------------------------------------------------------------- roles
-- Roles are cluster-wide: create them when absent, never fail when present
-- (two databases migrating at once may race: the losing CREATE is ignored).
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['skillmeat_app', 'skillmeat_admin', 'skillmeat_definer', 'skillmeat_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                   WHERE rolname = r AND (rolsuper OR rolbypassrls)) THEN
            RAISE EXCEPTION 'role % exists with SUPERUSER or BYPASSRLS: row-level security would not apply to it', r
                USING HINT = format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS', r);
        END IF;
    END LOOP;
    -- ALTER FUNCTION ... OWNER TO needs membership in the new owner.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT skillmeat_definer TO %I', current_user);
    END IF;
END
$roles$;

-- sync_catalog stages a scan in a temporary table: keep that working where
-- TEMPORARY has been revoked from PUBLIC (it is granted to PUBLIC by default).
DO $temp$
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO skillmeat_app, skillmeat_admin, skillmeat_worker',
                   current_database());
END
$temp$;

-- ---------------------------------------------------------------- helpers
-- A schema the application roles cannot write: nobody can shadow a helper. The
-- revision creates it first, with the identity key table (data, kept across
-- revisions that replace this file).
CREATE SCHEMA IF NOT EXISTS skillmeat_private;
-- USAGE for everybody: tenant_scope's first statement names current_user_id()
-- while the session still runs as the login role. What the schema holds is
-- guarded one by one (EXECUTE and SELECT are granted by name).
REVOKE ALL ON SCHEMA skillmeat_private FROM PUBLIC;
GRANT USAGE ON SCHEMA skillmeat_private TO PUBLIC;

-- The definer may read the keys' HMAC pads, never a stored secret; no request role
-- may read the table at all.
REVOKE ALL ON skillmeat_private.identity_keys FROM PUBLIC;
GRANT SELECT (key_id, inner_pad, outer_pad) ON skillmeat_private.identity_keys TO skillmeat_definer;

-- The request's user when its proof verifies, else NULL: absent, empty ('' after
-- an earlier transaction's set_config on the same connection), not a uuid, a
-- proof that is malformed, expired (against the transaction's start), made with
-- an unknown key or for another user. Fail closed without an error that would
-- break an innocent read. SECURITY DEFINER: only the definer reads the keys.
CREATE FUNCTION skillmeat_private.current_user_id() RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw text := current_setting('skillmeat.user_id', true);
    proof text := current_setting('skillmeat.user_proof', true);
    part text[];
    k record;
BEGIN
    -- Shape checks without regular expressions: a bounded-repetition pattern cost
    -- ~80 us a call here (this runs in every statement's policy InitPlan).
    IF raw IS NULL OR proof IS NULL OR length(raw) <> 36 THEN
        RETURN NULL;
    END IF;
    part := string_to_array(proof, '.');          -- v1.<key id>.<expires>.<mac hex>
    IF cardinality(part) <> 4 OR part[1] <> 'v1'
       OR length(part[3]) NOT BETWEEN 1 AND 12 OR translate(part[3], '0123456789', '') <> ''
       OR length(part[4]) <> 64 OR translate(part[4], '0123456789abcdef', '') <> ''
       OR part[3]::bigint < extract(epoch FROM now()) THEN
        RETURN NULL;
    END IF;
    SELECT i.inner_pad, i.outer_pad INTO k
      FROM skillmeat_private.identity_keys i WHERE i.key_id = part[2];
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- HMAC-SHA256 = H(K^opad || H(K^ipad || m)); the digests are compared hashed
    -- again, so where a comparison stops says nothing about the expected value.
    IF sha256(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(raw || '.' || part[3], 'UTF8'))))
       <> sha256(decode(part[4], 'hex')) THEN
        RETURN NULL;
    END IF;
    -- Signed by the backend, so it is the canonical text of a uuid.
    RETURN raw::uuid;
END
$$;

-- Projects where the current user holds at least min_role (viewer < editor < owner;
-- the CASE is spelled out in both helpers: a SQL function for it, having a SET
-- clause, could not be inlined and cost ~0.1 ms a statement).
-- SECURITY DEFINER, owned by skillmeat_definer (which may only read memberships,
-- sources and the keys' pads): a policy on project_members that read
-- project_members itself would recurse. plpgsql, not SQL: PostgreSQL 15 re-plans a
-- non-inlined SQL function on every call (~0.5 ms a statement); plpgsql caches it.
CREATE FUNCTION skillmeat_private.member_project_ids(min_role text) RETURNS uuid[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid := skillmeat_private.current_user_id();
BEGIN
    IF uid IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN coalesce((
        SELECT array_agg(m.project_id)
          FROM public.project_members m
         WHERE m.user_id = uid
           AND m.role = ANY (CASE min_role
                                 WHEN 'viewer' THEN ARRAY['viewer', 'editor', 'owner']
                                 WHEN 'editor' THEN ARRAY['editor', 'owner']
                                 WHEN 'owner' THEN ARRAY['owner']
                             END)
    ), '{}');
END
$$;

-- Sources of the projects where the current user holds at least min_role, in one
-- query: the identity is checked once into a variable, so no plan can call a
-- helper per source row (a nested helper did so on small tables). Entries are
-- checked against source ids directly: one index condition on entries.source_id.
CREATE FUNCTION skillmeat_private.member_source_ids(min_role text) RETURNS uuid[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid := skillmeat_private.current_user_id();
BEGIN
    IF uid IS NULL THEN
        RETURN '{}';
    END IF;
    RETURN coalesce((
        SELECT array_agg(s.id)
          FROM public.project_members m
          JOIN public.marketplace_sources s ON s.project_id = m.project_id
         WHERE m.user_id = uid
           AND m.role = ANY (CASE min_role
                                 WHEN 'viewer' THEN ARRAY['viewer', 'editor', 'owner']
                                 WHEN 'editor' THEN ARRAY['editor', 'owner']
                                 WHEN 'owner' THEN ARRAY['owner']
                             END)
    ), '{}');
END
$$;

-- A new owner needs CREATE on the schema (unless a superuser migrates): lend it.
GRANT CREATE ON SCHEMA skillmeat_private TO skillmeat_definer;
ALTER FUNCTION skillmeat_private.current_user_id() OWNER TO skillmeat_definer;
ALTER FUNCTION skillmeat_private.member_project_ids(text) OWNER TO skillmeat_definer;
ALTER FUNCTION skillmeat_private.member_source_ids(text) OWNER TO skillmeat_definer;
REVOKE CREATE ON SCHEMA skillmeat_private FROM skillmeat_definer;
REVOKE ALL ON FUNCTION skillmeat_private.current_user_id() FROM PUBLIC;
REVOKE ALL ON FUNCTION skillmeat_private.member_project_ids(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION skillmeat_private.member_source_ids(text) FROM PUBLIC;
-- current_user_id() answers only "does this transaction's own proof verify":
-- tenant_scope asks it in the statement that sets the identity, while the session
-- still runs as the login role (EXECUTE is checked before that statement runs).
GRANT EXECUTE ON FUNCTION skillmeat_private.current_user_id() TO PUBLIC;
GRANT EXECUTE ON FUNCTION skillmeat_private.member_project_ids(text) TO skillmeat_app;
GRANT EXECUTE ON FUNCTION skillmeat_private.member_source_ids(text) TO skillmeat_app;

-- ---------------------------------------------------------------- projects
-- viewer: read; owner: rename or delete. Creating a project is an admin operation.
ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.projects FORCE ROW LEVEL SECURITY;
GRANT SELECT, DELETE ON public.projects TO skillmeat_app;
GRANT UPDATE (name) ON public.projects TO skillmeat_app;
GRANT SELECT, DELETE ON public.projects TO skillmeat_admin;
GRANT INSERT (name), UPDATE (name) ON public.projects TO skillmeat_admin;
-- The last-owner trigger (project_keeps_an_owner) locks the project row (so two
-- owners demoting each other serialize) and checks it still exists: deleting a
-- project cascades its memberships and stays allowed. A row lock needs UPDATE on a
-- column; the definer runs only this library's functions. (An advisory lock here
-- could be taken by any request first, since pg_advisory_lock is PUBLIC.)
GRANT SELECT, UPDATE (updated_at) ON public.projects TO skillmeat_definer;

CREATE POLICY projects_app_select ON public.projects FOR SELECT TO skillmeat_app
    USING (id = ANY ((SELECT skillmeat_private.member_project_ids('viewer'))::uuid[]));
CREATE POLICY projects_app_update ON public.projects FOR UPDATE TO skillmeat_app
    USING (id = ANY ((SELECT skillmeat_private.member_project_ids('owner'))::uuid[]))
    WITH CHECK (id = ANY ((SELECT skillmeat_private.member_project_ids('owner'))::uuid[]));
CREATE POLICY projects_app_delete ON public.projects FOR DELETE TO skillmeat_app
    USING (id = ANY ((SELECT skillmeat_private.member_project_ids('owner'))::uuid[]));
CREATE POLICY projects_admin_select ON public.projects FOR SELECT TO skillmeat_admin USING (true);
CREATE POLICY projects_admin_insert ON public.projects FOR INSERT TO skillmeat_admin WITH CHECK (true);
CREATE POLICY projects_admin_update ON public.projects FOR UPDATE TO skillmeat_admin USING (true) WITH CHECK (true);
CREATE POLICY projects_admin_delete ON public.projects FOR DELETE TO skillmeat_admin USING (true);
CREATE POLICY projects_definer_select ON public.projects FOR SELECT TO skillmeat_definer USING (true);
CREATE POLICY projects_definer_update ON public.projects FOR UPDATE TO skillmeat_definer USING (true) WITH CHECK (true);

-- ---------------------------------------------------------------- project_members
-- viewer: read the project's memberships; owner: manage them, but never add
-- itself or change its own role; any member may delete its own row (leave).
ALTER TABLE public.project_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.project_members FORCE ROW LEVEL SECURITY;
GRANT SELECT, DELETE ON public.project_members TO skillmeat_app;
GRANT INSERT (project_id, user_id, role) ON public.project_members TO skillmeat_app;
GRANT UPDATE (role) ON public.project_members TO skillmeat_app;
GRANT SELECT, DELETE ON public.project_members TO skillmeat_admin;
GRANT INSERT (project_id, user_id, role), UPDATE (role) ON public.project_members TO skillmeat_admin;
GRANT SELECT ON public.project_members TO skillmeat_definer;

CREATE POLICY project_members_app_select ON public.project_members FOR SELECT TO skillmeat_app
    USING (project_id = ANY ((SELECT skillmeat_private.member_project_ids('viewer'))::uuid[]));
CREATE POLICY project_members_app_insert ON public.project_members FOR INSERT TO skillmeat_app
    WITH CHECK (project_id = ANY ((SELECT skillmeat_private.member_project_ids('owner'))::uuid[])
                AND user_id IS DISTINCT FROM (SELECT skillmeat_private.current_user_id()));
CREATE POLICY project_members_app_update ON public.project_members FOR UPDATE TO skillmeat_app
    USING (project_id = ANY ((SELECT skillmeat_private.member_project_ids('owner'))::uuid[])
           AND user_id IS DISTINCT FROM (SELECT skillmeat_private.current_user_id()))
    WITH CHECK (project_id = ANY ((SELECT skillmeat_private.member_project_ids('owner'))::uuid[])
                AND user_id IS DISTINCT FROM (SELECT skillmeat_private.current_user_id()));
CREATE POLICY project_members_app_delete ON public.project_members FOR DELETE TO skillmeat_app
    USING (project_id = ANY ((SELECT skillmeat_private.member_project_ids('owner'))::uuid[])
           OR user_id = (SELECT skillmeat_private.current_user_id()));
CREATE POLICY project_members_admin_select ON public.project_members FOR SELECT TO skillmeat_admin USING (true);
CREATE POLICY project_members_admin_insert ON public.project_members FOR INSERT TO skillmeat_admin WITH CHECK (true);
CREATE POLICY project_members_admin_update ON public.project_members FOR UPDATE TO skillmeat_admin USING (true) WITH CHECK (true);
CREATE POLICY project_members_admin_delete ON public.project_members FOR DELETE TO skillmeat_admin USING (true);
CREATE POLICY project_members_definer_select ON public.project_members FOR SELECT TO skillmeat_definer USING (true);

-- ---------------------------------------------------------------- marketplace_sources
-- viewer: read; editor: insert, update, delete (only within projects it edits).
ALTER TABLE public.marketplace_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.marketplace_sources FORCE ROW LEVEL SECURITY;
-- Column grants: no request role writes ids or audit stamps. An explicit id let
-- ON CONFLICT DO NOTHING tell whether another tenant's row exists.
GRANT SELECT, DELETE ON public.marketplace_sources TO skillmeat_app, skillmeat_admin;
GRANT INSERT (project_id, repo_url, branch_or_ref, root_hint, manual_map, trust_level, visibility),
      UPDATE (project_id, repo_url, branch_or_ref, root_hint, manual_map, trust_level, visibility,
              last_sync, last_error)
   ON public.marketplace_sources TO skillmeat_app, skillmeat_admin;
GRANT SELECT ON public.marketplace_sources TO skillmeat_definer;

CREATE POLICY marketplace_sources_app_select ON public.marketplace_sources FOR SELECT TO skillmeat_app
    USING (project_id = ANY ((SELECT skillmeat_private.member_project_ids('viewer'))::uuid[]));
CREATE POLICY marketplace_sources_app_insert ON public.marketplace_sources FOR INSERT TO skillmeat_app
    WITH CHECK (project_id = ANY ((SELECT skillmeat_private.member_project_ids('editor'))::uuid[]));
CREATE POLICY marketplace_sources_app_update ON public.marketplace_sources FOR UPDATE TO skillmeat_app
    USING (project_id = ANY ((SELECT skillmeat_private.member_project_ids('editor'))::uuid[]))
    WITH CHECK (project_id = ANY ((SELECT skillmeat_private.member_project_ids('editor'))::uuid[]));
CREATE POLICY marketplace_sources_app_delete ON public.marketplace_sources FOR DELETE TO skillmeat_app
    USING (project_id = ANY ((SELECT skillmeat_private.member_project_ids('editor'))::uuid[]));
CREATE POLICY marketplace_sources_admin_select ON public.marketplace_sources FOR SELECT TO skillmeat_admin USING (true);
CREATE POLICY marketplace_sources_admin_insert ON public.marketplace_sources FOR INSERT TO skillmeat_admin WITH CHECK (true);
CREATE POLICY marketplace_sources_admin_update ON public.marketplace_sources FOR UPDATE TO skillmeat_admin USING (true) WITH CHECK (true);
CREATE POLICY marketplace_sources_admin_delete ON public.marketplace_sources FOR DELETE TO skillmeat_admin USING (true);
CREATE POLICY marketplace_sources_definer_select ON public.marketplace_sources FOR SELECT TO skillmeat_definer USING (true);

-- ---------------------------------------------------------------- marketplace_catalog_entries
-- viewer: read; editor: insert, update, delete. A foreign-key check bypasses
-- RLS, so WITH CHECK on source_id is what refuses an entry aimed at another
-- tenant's source, with the same error whether that source exists or not.
ALTER TABLE public.marketplace_catalog_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.marketplace_catalog_entries FORCE ROW LEVEL SECURITY;
GRANT SELECT, DELETE ON public.marketplace_catalog_entries TO skillmeat_app, skillmeat_admin;
-- name, description, tags: written by a rescan; excluded_*: by exclude/restore.
GRANT INSERT (source_id, artifact_type, detected_path, upstream_url, detected_version_sha,
              confidence_score, detected_at, status, name, description, tags),
      UPDATE (upstream_url, detected_version_sha, confidence_score, detected_at, status,
              imported_at, imported_version_sha, name, description, tags,
              excluded_at, excluded_reason)
   ON public.marketplace_catalog_entries TO skillmeat_app, skillmeat_admin;

CREATE POLICY marketplace_catalog_entries_app_select ON public.marketplace_catalog_entries FOR SELECT TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('viewer'))::uuid[]));
CREATE POLICY marketplace_catalog_entries_app_insert ON public.marketplace_catalog_entries FOR INSERT TO skillmeat_app
    WITH CHECK (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]));
CREATE POLICY marketplace_catalog_entries_app_update ON public.marketplace_catalog_entries FOR UPDATE TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]))
    WITH CHECK (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]));
CREATE POLICY marketplace_catalog_entries_app_delete ON public.marketplace_catalog_entries FOR DELETE TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]));
CREATE POLICY marketplace_catalog_entries_admin_select ON public.marketplace_catalog_entries FOR SELECT TO skillmeat_admin USING (true);
CREATE POLICY marketplace_catalog_entries_admin_insert ON public.marketplace_catalog_entries FOR INSERT TO skillmeat_admin WITH CHECK (true);
CREATE POLICY marketplace_catalog_entries_admin_update ON public.marketplace_catalog_entries FOR UPDATE TO skillmeat_admin USING (true) WITH CHECK (true);
CREATE POLICY marketplace_catalog_entries_admin_delete ON public.marketplace_catalog_entries FOR DELETE TO skillmeat_admin USING (true);

-- ---------------------------------------------------------------- marketplace_scans
-- The scan queue: viewer reads its sources' scans; editor requests (INSERT of
-- source_id only) and cancels (UPDATE of state, cancel_requested_at, finished_at,
-- only to a queued, running or cancelled row); the worker and admin do everything
-- through their own USING (true) policies. No request role writes id, attempts
-- or a lease as a member.
ALTER TABLE public.marketplace_scans ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.marketplace_scans FORCE ROW LEVEL SECURITY;
GRANT SELECT ON public.marketplace_scans TO skillmeat_app;
GRANT INSERT (source_id), UPDATE (state, cancel_requested_at, finished_at)
   ON public.marketplace_scans TO skillmeat_app;
GRANT SELECT, DELETE ON public.marketplace_scans TO skillmeat_admin, skillmeat_worker;
GRANT INSERT (source_id, not_before),
      UPDATE (state, attempts, not_before, started_at, finished_at, worker, lease_token,
              lease_expires_at, heartbeat_at, cancel_requested_at, error, commit_sha,
              duration_ms, files_scanned, bytes_fetched, rate_limit_remaining,
              entries_new, entries_updated, entries_removed, entries_unchanged,
              entries_inserted, entries_changed, confidence_histogram)
   ON public.marketplace_scans TO skillmeat_admin, skillmeat_worker;

CREATE POLICY marketplace_scans_app_select ON public.marketplace_scans FOR SELECT TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('viewer'))::uuid[]));
CREATE POLICY marketplace_scans_app_insert ON public.marketplace_scans FOR INSERT TO skillmeat_app
    WITH CHECK (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[])
                AND state = 'queued');
CREATE POLICY marketplace_scans_app_update ON public.marketplace_scans FOR UPDATE TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[])
           AND state IN ('queued', 'running'))
    WITH CHECK (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[])
                AND state IN ('queued', 'running', 'cancelled'));
CREATE POLICY marketplace_scans_admin_select ON public.marketplace_scans FOR SELECT TO skillmeat_admin USING (true);
CREATE POLICY marketplace_scans_admin_insert ON public.marketplace_scans FOR INSERT TO skillmeat_admin WITH CHECK (true);
CREATE POLICY marketplace_scans_admin_update ON public.marketplace_scans FOR UPDATE TO skillmeat_admin USING (true) WITH CHECK (true);
CREATE POLICY marketplace_scans_admin_delete ON public.marketplace_scans FOR DELETE TO skillmeat_admin USING (true);
CREATE POLICY marketplace_scans_worker_select ON public.marketplace_scans FOR SELECT TO skillmeat_worker USING (true);
CREATE POLICY marketplace_scans_worker_insert ON public.marketplace_scans FOR INSERT TO skillmeat_worker WITH CHECK (true);
CREATE POLICY marketplace_scans_worker_update ON public.marketplace_scans FOR UPDATE TO skillmeat_worker USING (true) WITH CHECK (true);
CREATE POLICY marketplace_scans_worker_delete ON public.marketplace_scans FOR DELETE TO skillmeat_worker USING (true);

-- ---------------------------------------------------------------- the worker on the other tables
-- Sources: read the scan configuration of every source and the sync's own columns
-- (not project_id, trust_level or visibility: a scan needs none of them). UPDATE (last_sync, last_error) also lets sync_catalog lock
-- the source FOR NO KEY UPDATE (which needs UPDATE privilege and policy). No
-- INSERT or DELETE; no grant at all on projects or project_members.
GRANT SELECT (id, repo_url, branch_or_ref, root_hint, manual_map, last_sync, last_error),
      UPDATE (last_sync, last_error)
   ON public.marketplace_sources TO skillmeat_worker;
CREATE POLICY marketplace_sources_worker_select ON public.marketplace_sources FOR SELECT TO skillmeat_worker USING (true);
CREATE POLICY marketplace_sources_worker_update ON public.marketplace_sources FOR UPDATE TO skillmeat_worker USING (true) WITH CHECK (true);

-- Entries: what sync_catalog reads and writes; never an import's columns
-- (imported_at, imported_version_sha are the user's) and never a DELETE
-- (a rescan marks entries removed).
GRANT SELECT (id, source_id, artifact_type, detected_path, upstream_url, detected_version_sha,
              confidence_score, detected_at, status, imported_at, imported_version_sha,
              name, description, tags),
      INSERT (source_id, artifact_type, detected_path, upstream_url, detected_version_sha,
              confidence_score, detected_at, status, name, description, tags),
      UPDATE (upstream_url, detected_version_sha, confidence_score, detected_at, status,
              name, description, tags)
   ON public.marketplace_catalog_entries TO skillmeat_worker;
CREATE POLICY marketplace_catalog_entries_worker_select ON public.marketplace_catalog_entries FOR SELECT TO skillmeat_worker USING (true);
CREATE POLICY marketplace_catalog_entries_worker_insert ON public.marketplace_catalog_entries FOR INSERT TO skillmeat_worker WITH CHECK (true);
CREATE POLICY marketplace_catalog_entries_worker_update ON public.marketplace_catalog_entries FOR UPDATE TO skillmeat_worker USING (true) WITH CHECK (true);

-- ---------------------------------------------------------------- search
-- Catalog search runs inside SECURITY DEFINER functions owned by skillmeat_search,
-- a NOLOGIN role with no members. Why: under RLS, `@@`, `%` and ILIKE are not
-- LEAKPROOF, so a member's text predicate could only be a filter after the policy's
-- `source_id = ANY (...)` (197-659 ms for a member seeing 272,000 entries). The
-- definer applies the same tenant filter itself, taken from the verified identity
-- (member_source_ids('viewer')), never from the caller, so `(source_id, search_vector)`
-- is one GIN index condition. Membership in skillmeat_search would read every row:
-- it must have none (the revision refuses to apply otherwise; a test checks it).
DO $search_role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'skillmeat_search') THEN
        BEGIN
            CREATE ROLE skillmeat_search NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
               WHERE rolname = 'skillmeat_search' AND (rolsuper OR rolbypassrls OR rolcanlogin)) THEN
        RAISE EXCEPTION 'role skillmeat_search exists with SUPERUSER, BYPASSRLS or LOGIN'
            USING HINT = 'ALTER ROLE skillmeat_search NOSUPERUSER NOBYPASSRLS NOLOGIN';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
               WHERE r.rolname = 'skillmeat_search') THEN
        RAISE EXCEPTION 'role skillmeat_search has members: each of them could read every catalog entry'
            USING HINT = 'REVOKE skillmeat_search FROM <each member>';
    END IF;
END
$search_role$;

-- What search reads, column by column, and a policy that lets it read every row:
-- the tenant filter is the functions' own WHERE.
GRANT SELECT (id, project_id) ON public.marketplace_sources TO skillmeat_search;
CREATE POLICY marketplace_sources_search_select ON public.marketplace_sources FOR SELECT TO skillmeat_search USING (true);
GRANT SELECT (id, source_id, artifact_type, status, name, search_vector, excluded_at)
   ON public.marketplace_catalog_entries TO skillmeat_search;
CREATE POLICY marketplace_catalog_entries_search_select ON public.marketplace_catalog_entries FOR SELECT TO skillmeat_search USING (true);
GRANT EXECUTE ON FUNCTION skillmeat_private.member_source_ids(text) TO skillmeat_search;

-- The query both entry points run: (entry id, score) of one page, best first.
-- visible: the sources to search (NULL: all, for the admin entry point only).
-- p_query: the query as ranked; p_plain: the same query without the type-ahead prefix
-- on its last word (NULL when it has none).
-- Candidates are bounded: at most 1,000 full-text matches and 1,000 name-prefix
-- matches are ranked (ranking all 35,000 matches of a common term took 138-224 ms).
-- The full-text candidates are the plain query's first; only when it has fewer than
-- 1,000 does the prefix add its expansions. Why: a prefix is a partial match in GIN,
-- which collects every TID of every matching lexeme in the whole table before the
-- source filter applies (23 ms for a common word even in a 50-entry source), while a
-- plain word is intersected with the source's entries inside the index.
-- A member's sources are scanned one at a time (`source_id = v.sid`, LATERAL), so a
-- common word stops after the sources that fill the 1,000; `source_id = ANY (...)`
-- would AND the word's bitmap over the whole table with the member's rows first.
-- Not SECURITY DEFINER and executable by its owner only: it trusts `visible`.
-- Dynamic SQL built from constant fragments (values only through USING), so each
-- call is planned with its own arrays and the source filter is an index condition.
-- The planner settings are the function's own, not the caller's.
CREATE FUNCTION skillmeat_private.search_core(
    visible uuid[], p_query tsquery, p_plain tsquery, p_exact text, p_prefix text,
    p_pattern text, p_fuzzy text, p_types text[], p_statuses text[],
    p_include_excluded boolean, p_after_score double precision, p_after_id uuid,
    p_limit integer)
    RETURNS TABLE (entry_id uuid, score double precision)
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    -- every statement here has an index path; the typo check's NOT EXISTS was planned
    -- as a Seq Scan expecting an early hit, which a rare term never gives
    SET enable_seqscan = off
    SET enable_indexscan = on
    SET enable_bitmapscan = on
    SET enable_nestloop = on
    SET enable_hashjoin = on
    SET enable_sort = on
    SET enable_hashagg = on
    SET jit = off
AS $$
DECLARE
    cap constant integer := 1000;
    src text := CASE WHEN visible IS NULL THEN '' ELSE 'e.source_id = ANY ($1) AND ' END;
    filters text := '';
    found_ids uuid[];
    more uuid[];
    fuzzy boolean := false;
    few boolean := false;
    scored text;
    pass text;
    page integer := least(greatest(p_limit, 1), 501);
BEGIN
    -- In id order: the candidates of a common word are the first sources' matches, and
    -- the caller's array order (member_source_ids follows last_sync, which every sync
    -- moves) must not change them between one page and the next.
    IF visible IS NOT NULL THEN
        visible := ARRAY(SELECT DISTINCT v FROM unnest(visible) AS v ORDER BY v);
    END IF;
    IF p_types IS NOT NULL THEN
        filters := filters || ' AND e.artifact_type = ANY ($7)';
    END IF;
    IF p_statuses IS NOT NULL THEN
        filters := filters || ' AND e.status = ANY ($8)';
    END IF;
    IF NOT p_include_excluded THEN
        filters := filters || ' AND e.excluded_at IS NULL';
    END IF;
    -- One full-text pass: $2 its tsquery, $9 the ids already found, $10 how many more.
    pass := 'SELECT ARRAY(' || CASE WHEN visible IS NULL
        THEN 'SELECT e.id FROM public.marketplace_catalog_entries e WHERE e.search_vector @@ $2'
             || filters || ' AND e.id <> ALL ($9) LIMIT $10'
        ELSE 'SELECT c.id FROM unnest($1) AS v(sid) CROSS JOIN LATERAL ('
             || 'SELECT e.id FROM public.marketplace_catalog_entries e'
             || ' WHERE e.source_id = v.sid AND e.search_vector @@ $2' || filters
             || ' AND e.id <> ALL ($9)) c LIMIT $10' END || ')';
    EXECUTE pass
       INTO found_ids
      USING visible, coalesce(p_plain, p_query), p_exact, p_prefix, p_pattern, p_fuzzy,
            p_types, p_statuses, '{}'::uuid[], cap;
    IF p_plain IS NOT NULL AND cardinality(found_ids) < cap THEN
        -- The prefix's pass. Over at most 1,000 visible entries it reads them (by the
        -- source_id btree) and tests each: cheaper than the GIN partial match, which
        -- costs what the prefix matches in the whole table (ts_match_vq is @@ that no
        -- index can take).
        IF visible IS NOT NULL THEN
            EXECUTE 'SELECT count(*) <= 1000 FROM (SELECT 1 FROM public.marketplace_catalog_entries e'
                    || ' WHERE e.source_id = ANY ($1) LIMIT 1001) x'
               INTO few
              USING visible;
        END IF;
        IF few THEN
            pass := 'SELECT ARRAY(SELECT e.id FROM public.marketplace_catalog_entries e'
                    || ' WHERE e.source_id = ANY ($1) AND ts_match_vq(e.search_vector, $2)'
                    || filters || ' AND e.id <> ALL ($9) LIMIT $10)';
        END IF;
        EXECUTE pass
           INTO more
          USING visible, p_query, p_exact, p_prefix, p_pattern, p_fuzzy, p_types, p_statuses,
                found_ids, cap - cardinality(found_ids);
        found_ids := found_ids || more;
    END IF;
    -- exact name 3+, name prefix 2+, then the rank (name A > tags B > description C),
    -- normalized to [0, 1) (flag 32: rank / (rank + 1))
    scored := '(CASE WHEN btrim(regexp_replace(lower(e.name), ''[^[:alnum:]]+'', '' '', ''g'')) = $3 THEN 3'
              || ' WHEN starts_with(btrim(regexp_replace(lower(e.name), ''[^[:alnum:]]+'', '' '', ''g'')), $4) THEN 2'
              || ' ELSE 0 END + ts_rank(''{0.05, 0.2, 0.5, 1.0}'', e.search_vector, $2, 32))::double precision';
    -- Full-text candidates, and for one bare word the names starting with it.
    RETURN QUERY EXECUTE
        'SELECT s.id, s.score FROM (SELECT e.id, ' || scored || ' AS score FROM ('
        || 'SELECT unnest($9) AS id'
        || CASE WHEN p_pattern IS NULL THEN ''
                ELSE ' UNION (SELECT e.id FROM public.marketplace_catalog_entries e WHERE '
                     || src || 'e.name ILIKE $5' || filters || ' LIMIT ' || cap || ')' END
        || ') c JOIN public.marketplace_catalog_entries e ON e.id = c.id) s'
        || ' WHERE $10 IS NULL OR s.score < $10 OR (s.score = $10 AND s.id > $11)'
        || ' ORDER BY s.score DESC, s.id LIMIT $12'
      USING visible, p_query, p_exact, p_prefix, p_pattern, p_fuzzy, p_types, p_statuses,
            found_ids, p_after_score, p_after_id, page;
    IF FOUND OR p_fuzzy IS NULL THEN
        RETURN;
    END IF;
    -- A one-word query with no full-text hit at all falls back to names within trigram
    -- similarity (typos). Asked only when this page came back empty: a later page's
    -- emptiness says nothing, so it counts the full-text matches first (no LIMIT: an
    -- EXISTS was planned as a btree scan filtering @@, expecting an early hit that a
    -- rare term never gives).
    IF p_after_score IS NOT NULL THEN
        EXECUTE 'SELECT count(*) = 0 FROM public.marketplace_catalog_entries e WHERE '
                || src || 'e.search_vector @@ $2' || filters
           INTO fuzzy
          USING visible, p_query, p_exact, p_prefix, p_pattern, p_fuzzy, p_types, p_statuses;
        IF NOT fuzzy THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT s.id, s.score FROM (SELECT e.id, public.similarity(e.name, $6)::double precision AS score'
        || ' FROM (SELECT e.id FROM public.marketplace_catalog_entries e WHERE '
        || src || 'e.name OPERATOR(public.%) $6' || filters || ' LIMIT ' || cap || ') c'
        || ' JOIN public.marketplace_catalog_entries e ON e.id = c.id) s'
        || ' WHERE $9 IS NULL OR s.score < $9 OR (s.score = $9 AND s.id > $10)'
        || ' ORDER BY s.score DESC, s.id LIMIT $11'
      USING visible, p_query, p_exact, p_prefix, p_pattern, p_fuzzy, p_types, p_statuses,
            p_after_score, p_after_id, page;
END
$$;

-- A member's search: the sources are those member_source_ids('viewer') returns for
-- the verified identity (a forged or absent proof: none), narrowed by the caller's
-- project or sources, never widened.
CREATE FUNCTION skillmeat_private.search_catalog(
    p_query tsquery, p_plain tsquery, p_exact text, p_prefix text, p_pattern text,
    p_fuzzy text, p_project uuid, p_sources uuid[], p_types text[], p_statuses text[],
    p_include_excluded boolean, p_after_score double precision, p_after_id uuid,
    p_limit integer)
    RETURNS TABLE (entry_id uuid, score double precision)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    visible uuid[] := coalesce(skillmeat_private.member_source_ids('viewer'), '{}');
BEGIN
    IF p_sources IS NOT NULL THEN
        visible := ARRAY(SELECT unnest(visible) INTERSECT SELECT unnest(p_sources));
    END IF;
    IF p_project IS NOT NULL THEN
        visible := ARRAY(SELECT s.id FROM public.marketplace_sources s
                          WHERE s.id = ANY (visible) AND s.project_id = p_project);
    END IF;
    IF cardinality(visible) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT c.entry_id, c.score FROM skillmeat_private.search_core(
        visible, p_query, p_plain, p_exact, p_prefix, p_pattern, p_fuzzy, p_types,
        p_statuses, p_include_excluded, p_after_score, p_after_id, p_limit) c;
END
$$;

-- The admin's search: every source, unless the caller narrows it. A function of its
-- own, executable by skillmeat_admin only: inside a SECURITY DEFINER function
-- current_user is the owner, so the caller's role is decided by the EXECUTE grant.
CREATE FUNCTION skillmeat_private.search_catalog_admin(
    p_query tsquery, p_plain tsquery, p_exact text, p_prefix text, p_pattern text,
    p_fuzzy text, p_project uuid, p_sources uuid[], p_types text[], p_statuses text[],
    p_include_excluded boolean, p_after_score double precision, p_after_id uuid,
    p_limit integer)
    RETURNS TABLE (entry_id uuid, score double precision)
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    visible uuid[] := p_sources;
BEGIN
    IF p_project IS NOT NULL THEN
        visible := ARRAY(SELECT s.id FROM public.marketplace_sources s
                          WHERE s.project_id = p_project AND (visible IS NULL OR s.id = ANY (visible)));
    END IF;
    RETURN QUERY SELECT c.entry_id, c.score FROM skillmeat_private.search_core(
        visible, p_query, p_plain, p_exact, p_prefix, p_pattern, p_fuzzy, p_types,
        p_statuses, p_include_excluded, p_after_score, p_after_id, p_limit) c;
END
$$;

-- Ownership moves to skillmeat_search; a migrating non-superuser is a member only for
-- these statements (the role must end with no members).
DO $search_owner$
DECLARE
    lent boolean := NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
    GRANT CREATE ON SCHEMA skillmeat_private TO skillmeat_search;
    IF lent THEN
        EXECUTE format('GRANT skillmeat_search TO %I', current_user);
    END IF;
    ALTER FUNCTION skillmeat_private.search_core(uuid[], tsquery, tsquery, text, text, text, text, text[], text[], boolean, double precision, uuid, integer) OWNER TO skillmeat_search;
    ALTER FUNCTION skillmeat_private.search_catalog(tsquery, tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, double precision, uuid, integer) OWNER TO skillmeat_search;
    ALTER FUNCTION skillmeat_private.search_catalog_admin(tsquery, tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, double precision, uuid, integer) OWNER TO skillmeat_search;
    IF lent THEN
        EXECUTE format('REVOKE skillmeat_search FROM %I', current_user);
    END IF;
    REVOKE CREATE ON SCHEMA skillmeat_private FROM skillmeat_search;
END
$search_owner$;
REVOKE ALL ON FUNCTION skillmeat_private.search_core(uuid[], tsquery, tsquery, text, text, text, text, text[], text[], boolean, double precision, uuid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION skillmeat_private.search_catalog(tsquery, tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, double precision, uuid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION skillmeat_private.search_catalog_admin(tsquery, tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, double precision, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION skillmeat_private.search_catalog(tsquery, tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, double precision, uuid, integer) TO skillmeat_app;
GRANT EXECUTE ON FUNCTION skillmeat_private.search_catalog_admin(tsquery, tsquery, text, text, text, text, uuid, uuid[], text[], text[], boolean, double precision, uuid, integer) TO skillmeat_admin;

-- ================================================================ tokens and links
-- (revision 20261206_0050_tokens_and_links; docs/security.md, "Tokens")

-- ---------------------------------------------------------------- marketplace_source_tokens
-- A source's GitHub token, AES-256-GCM encrypted by the backend before it reaches SQL
-- (skillmeat/core/crypto.py): no statement, WAL record or dead tuple holds the
-- plaintext. Editors write it (set, replace, clear) and every member may see that
-- one exists (SELECT of source_id only: has_token), never read it back: no request
-- role may SELECT key_id, nonce or ciphertext. set_source_token upserts with bind
-- parameters, not EXCLUDED.* (reading EXCLUDED.ciphertext needs SELECT on it).
-- The worker reads it to scan (and re-encrypts it: rotation); admin does everything.
ALTER TABLE public.marketplace_source_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.marketplace_source_tokens FORCE ROW LEVEL SECURITY;
GRANT SELECT (source_id), INSERT (source_id, key_id, nonce, ciphertext),
      UPDATE (key_id, nonce, ciphertext, updated_at), DELETE
   ON public.marketplace_source_tokens TO skillmeat_app;
GRANT SELECT, DELETE ON public.marketplace_source_tokens TO skillmeat_admin;
GRANT INSERT (source_id, key_id, nonce, ciphertext), UPDATE (key_id, nonce, ciphertext, updated_at)
   ON public.marketplace_source_tokens TO skillmeat_admin;
GRANT SELECT, UPDATE (key_id, nonce, ciphertext, updated_at)
   ON public.marketplace_source_tokens TO skillmeat_worker;

CREATE POLICY marketplace_source_tokens_app_select ON public.marketplace_source_tokens FOR SELECT TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('viewer'))::uuid[]));
CREATE POLICY marketplace_source_tokens_app_insert ON public.marketplace_source_tokens FOR INSERT TO skillmeat_app
    WITH CHECK (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]));
CREATE POLICY marketplace_source_tokens_app_update ON public.marketplace_source_tokens FOR UPDATE TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]))
    WITH CHECK (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]));
CREATE POLICY marketplace_source_tokens_app_delete ON public.marketplace_source_tokens FOR DELETE TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('editor'))::uuid[]));
CREATE POLICY marketplace_source_tokens_admin_select ON public.marketplace_source_tokens FOR SELECT TO skillmeat_admin USING (true);
CREATE POLICY marketplace_source_tokens_admin_insert ON public.marketplace_source_tokens FOR INSERT TO skillmeat_admin WITH CHECK (true);
CREATE POLICY marketplace_source_tokens_admin_update ON public.marketplace_source_tokens FOR UPDATE TO skillmeat_admin USING (true) WITH CHECK (true);
CREATE POLICY marketplace_source_tokens_admin_delete ON public.marketplace_source_tokens FOR DELETE TO skillmeat_admin USING (true);
CREATE POLICY marketplace_source_tokens_worker_select ON public.marketplace_source_tokens FOR SELECT TO skillmeat_worker USING (true);
CREATE POLICY marketplace_source_tokens_worker_update ON public.marketplace_source_tokens FOR UPDATE TO skillmeat_worker USING (true) WITH CHECK (true);

-- ---------------------------------------------------------------- harvesting: sources' columns
-- Members turn harvesting on and set its limit; discovered_at/discovered_by are
-- written only by the harvest helper below (a CHECK keeps a discovered source from
-- ever harvesting: depth 1).
GRANT INSERT (harvest_links, harvest_limit), UPDATE (harvest_links, harvest_limit)
   ON public.marketplace_sources TO skillmeat_app, skillmeat_admin;

-- ---------------------------------------------------------------- marketplace_source_links
-- Which repositories a source's README linked (in README order). Members read the
-- links of their projects' sources; only the harvest helper writes them (the worker
-- calls it); admin does everything.
ALTER TABLE public.marketplace_source_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.marketplace_source_links FORCE ROW LEVEL SECURITY;
GRANT SELECT ON public.marketplace_source_links TO skillmeat_app;
GRANT SELECT, DELETE ON public.marketplace_source_links TO skillmeat_admin;
GRANT INSERT (source_id, linked_source_id, position), UPDATE (position)
   ON public.marketplace_source_links TO skillmeat_admin;

CREATE POLICY marketplace_source_links_app_select ON public.marketplace_source_links FOR SELECT TO skillmeat_app
    USING (source_id = ANY ((SELECT skillmeat_private.member_source_ids('viewer'))::uuid[]));
CREATE POLICY marketplace_source_links_admin_select ON public.marketplace_source_links FOR SELECT TO skillmeat_admin USING (true);
CREATE POLICY marketplace_source_links_admin_insert ON public.marketplace_source_links FOR INSERT TO skillmeat_admin WITH CHECK (true);
CREATE POLICY marketplace_source_links_admin_update ON public.marketplace_source_links FOR UPDATE TO skillmeat_admin USING (true) WITH CHECK (true);
CREATE POLICY marketplace_source_links_admin_delete ON public.marketplace_source_links FOR DELETE TO skillmeat_admin USING (true);

-- ---------------------------------------------------------------- the harvest helper
-- The worker may not create sources or read their projects; harvesting needs both,
-- within the finder's project only. skillmeat_harvester (NOLOGIN NOINHERIT, no
-- members but a non-superuser migrator) owns the one function that does it.
DO $harvester$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'skillmeat_harvester') THEN
        BEGIN
            CREATE ROLE skillmeat_harvester NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
               WHERE rolname = 'skillmeat_harvester' AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role skillmeat_harvester exists with SUPERUSER or BYPASSRLS: row-level security would not apply to it'
            USING HINT = 'ALTER ROLE skillmeat_harvester NOSUPERUSER NOBYPASSRLS';
    END IF;
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT skillmeat_harvester TO %I', current_user);
    END IF;
END
$harvester$;

GRANT SELECT, INSERT (project_id, repo_url, discovered_at, discovered_by)
   ON public.marketplace_sources TO skillmeat_harvester;
GRANT SELECT, INSERT (source_id, linked_source_id, position), UPDATE (position), DELETE
   ON public.marketplace_source_links TO skillmeat_harvester;
GRANT SELECT (source_id) ON public.marketplace_source_tokens TO skillmeat_harvester;
CREATE POLICY marketplace_sources_harvester_select ON public.marketplace_sources FOR SELECT TO skillmeat_harvester USING (true);
CREATE POLICY marketplace_sources_harvester_insert ON public.marketplace_sources FOR INSERT TO skillmeat_harvester
    WITH CHECK (discovered_at IS NOT NULL AND discovered_by IS NOT NULL AND NOT harvest_links);
CREATE POLICY marketplace_source_links_harvester_select ON public.marketplace_source_links FOR SELECT TO skillmeat_harvester USING (true);
CREATE POLICY marketplace_source_links_harvester_insert ON public.marketplace_source_links FOR INSERT TO skillmeat_harvester WITH CHECK (true);
CREATE POLICY marketplace_source_links_harvester_update ON public.marketplace_source_links FOR UPDATE TO skillmeat_harvester USING (true) WITH CHECK (true);
CREATE POLICY marketplace_source_links_harvester_delete ON public.marketplace_source_links FOR DELETE TO skillmeat_harvester USING (true);
CREATE POLICY marketplace_source_tokens_harvester_select ON public.marketplace_source_tokens FOR SELECT TO skillmeat_harvester USING (true);

-- The finder's links become `repo_urls` (canonical https://github.com/<owner>/<repo>,
-- parsed by the backend; the CHECK on repo_url refuses anything else): the finder
-- itself and case-insensitive duplicates dropped, the first harvest_limit kept in
-- order, each linked to the project's source of that repository or to a new
-- discovered one; links not reported again are dropped (their sources stay). A
-- source that does not harvest (harvest_links false, or discovered: depth 1) gets
-- nothing written and an empty result. Returns the linked sources, in order.
CREATE FUNCTION skillmeat_private.record_harvested_links(finder uuid, repo_urls text[])
    RETURNS TABLE (link_position integer, source jsonb)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    src record;
    url text;
    linked uuid;
    kept uuid[] := '{}';
    seen text[] := '{}';
BEGIN
    SELECT s.project_id, s.repo_url, s.harvest_links, s.harvest_limit, s.discovered_at
      INTO src FROM public.marketplace_sources s WHERE s.id = finder;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'source_id: % is not a source', finder USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT src.harvest_links OR src.discovered_at IS NOT NULL THEN
        RETURN;
    END IF;
    FOREACH url IN ARRAY coalesce(repo_urls, '{}') LOOP
        EXIT WHEN cardinality(kept) >= src.harvest_limit;
        CONTINUE WHEN url IS NULL OR lower(url) = lower(src.repo_url) OR lower(url) = ANY (seen);
        seen := seen || lower(url);
        linked := NULL;
        SELECT s.id INTO linked FROM public.marketplace_sources s
         WHERE s.project_id = src.project_id AND lower(s.repo_url) = lower(url);
        IF linked IS NULL THEN
            INSERT INTO public.marketplace_sources (project_id, repo_url, discovered_at, discovered_by)
            VALUES (src.project_id, url, now(), finder)
            ON CONFLICT (project_id, lower(repo_url)) DO NOTHING
            RETURNING id INTO linked;
        END IF;
        IF linked IS NULL THEN  -- a concurrent harvest created it meanwhile
            SELECT s.id INTO STRICT linked FROM public.marketplace_sources s
             WHERE s.project_id = src.project_id AND lower(s.repo_url) = lower(url);
        END IF;
        INSERT INTO public.marketplace_source_links (source_id, linked_source_id, position)
        VALUES (finder, linked, cardinality(kept))
        ON CONFLICT (source_id, linked_source_id) DO UPDATE SET position = excluded.position;
        kept := kept || linked;
    END LOOP;
    DELETE FROM public.marketplace_source_links l
     WHERE l.source_id = finder AND l.linked_source_id <> ALL (kept);
    RETURN QUERY
        SELECT l.position, to_jsonb(s) || jsonb_build_object('has_token', EXISTS (
                   SELECT 1 FROM public.marketplace_source_tokens t WHERE t.source_id = s.id))
          FROM public.marketplace_source_links l
          JOIN public.marketplace_sources s ON s.id = l.linked_source_id
         WHERE l.source_id = finder
         ORDER BY l.position;
END
$$;

GRANT CREATE ON SCHEMA skillmeat_private TO skillmeat_harvester;
ALTER FUNCTION skillmeat_private.record_harvested_links(uuid, text[]) OWNER TO skillmeat_harvester;
REVOKE CREATE ON SCHEMA skillmeat_private FROM skillmeat_harvester;
REVOKE ALL ON FUNCTION skillmeat_private.record_harvested_links(uuid, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION skillmeat_private.record_harvested_links(uuid, text[]) TO skillmeat_worker, skillmeat_admin;

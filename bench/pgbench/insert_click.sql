-- The database ceiling: one single-row INSERT per transaction into a table shaped like clicks
-- (same columns and indexes, no foreign keys). Variables: program (uuid), ncodes.
\set code random_zipfian(1, :ncodes, 1.01)
INSERT INTO bench_click_ceiling (id, created_at, program_id, code_id, referrer_id, occurred_at,
    source, landing_url, utm_source, utm_medium, utm_campaign, visitor_id, ip_hash, user_agent,
    is_bot, is_duplicate, attributable)
VALUES (gen_random_uuid(), now(), :program,
    ('00000000-0000-4000-8000-' || lpad(to_hex(:code::bigint), 12, '0'))::uuid,
    ('00000000-0000-4000-8001-' || lpad(to_hex(:code::bigint), 12, '0'))::uuid,
    now(), 'api', 'https://shop.example/landing', 'facebook', 'social', 'bench',
    'v' || :client_id::text, md5(:code::text) || md5(:client_id::text),
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
    false, false, true);

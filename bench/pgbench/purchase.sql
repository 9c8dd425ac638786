-- The database ceiling for POST /v1/conversions: the statements the service sends for one
-- purchase (a new customer naming a code; two rules; nobody listening for webhooks), in one
-- transaction, as captured from the service (tests/test_purchase_path.py counts them): the
-- program locked key-share with its rules version, the claim of the event_id, every
-- attribution candidate, the referral with "first purchase", the attribution, the rewards.
-- The code is drawn (Zipf) from bench_purchase_codes inside the candidates statement.
-- Variables: program, ncodes, tag (the run's), rule_referrer, rule_referee (the rules' ids).
\set r random_zipfian(1, :ncodes, 1.01)
\set cents random(2000, 19999)
\set k random(1, 2000000000)
BEGIN;
SELECT programs.name, programs.landing_url, programs.attribution_model,
    programs.attribution_window_days, programs.status, programs.currency, programs.referee_offer,
    programs.allowed_origins, programs.redemption_proof, programs.reminder_after_days,
    programs.updated_at, programs.id, programs.created_at,
    (SELECT coalesce(sum(reward_rules.version), 0) FROM reward_rules
     WHERE reward_rules.program_id = programs.id) AS rules_version_sum,
    (SELECT max(reward_rules.updated_at) FROM reward_rules
     WHERE reward_rules.program_id = programs.id) AS rules_updated_at,
    EXISTS (SELECT * FROM webhook_endpoints WHERE webhook_endpoints.enabled IS true) AS any_endpoint
FROM programs WHERE programs.id = :program FOR KEY SHARE OF programs;
INSERT INTO conversions (program_id, event_id, request_hash, customer_id, email, amount, currency,
    occurred_at, status, attribution_reason, attribution, refunded_amount, metadata, id, created_at)
VALUES (:program, 'pgbench-' || :tag || '-' || :client_id || '-' || :k, md5(:k::text) || md5(:client_id::text),
    'pgbench-' || :client_id || '-' || :k, NULL, :cents / 100.0, 'USD', now(), 'unattributed',
    'organic', '{}', 0, '{}', gen_random_uuid(), now())
ON CONFLICT DO NOTHING RETURNING conversions.id AS conversion_id \gset
SELECT anon_1.part, anon_1.id, anon_1.program_id, anon_1.referrer_id, anon_1.code_id, anon_1.code,
    anon_1.occurred_at, anon_1.click_id, anon_1.source, anon_1.disabled, anon_1.expires_at,
    anon_1.is_bot, anon_1.attributable, anon_1.customer_id, referrers.external_id, referrers.email
FROM (SELECT 0 AS part, codes.id AS id, codes.program_id AS program_id,
        codes.referrer_id AS referrer_id, codes.id AS code_id, codes.code AS code,
        CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS occurred_at, CAST(NULL AS UUID) AS click_id,
        CAST(NULL AS VARCHAR(16)) AS source, codes.disabled AS disabled,
        codes.expires_at AS expires_at, CAST(NULL AS BOOLEAN) AS is_bot,
        CAST(NULL AS BOOLEAN) AS attributable, CAST(NULL AS VARCHAR(200)) AS customer_id
    FROM codes
    WHERE codes.normalized = (SELECT normalized FROM bench_purchase_codes WHERE n = :r)
    UNION ALL
    SELECT 2 AS part, referrals.id AS id, referrals.program_id AS program_id,
        referrals.referrer_id AS referrer_id, referrals.code_id AS code_id, codes.code AS code,
        referrals.occurred_at AS occurred_at, referrals.click_id AS click_id,
        referrals.source AS source, CAST(NULL AS BOOLEAN) AS disabled,
        CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS expires_at, CAST(NULL AS BOOLEAN) AS is_bot,
        CAST(NULL AS BOOLEAN) AS attributable, CAST(NULL AS VARCHAR(200)) AS customer_id
    FROM referrals JOIN codes ON codes.id = referrals.code_id
    WHERE referrals.program_id = :program AND referrals.customer_id = 'pgbench-' || :client_id || '-' || :k
    UNION ALL
    SELECT anon_2.part, anon_2.id, anon_2.program_id, anon_2.referrer_id, anon_2.code_id,
        anon_2.code, anon_2.occurred_at, anon_2.click_id, anon_2.source, anon_2.disabled,
        anon_2.expires_at, anon_2.is_bot, anon_2.attributable, anon_2.customer_id
    FROM (SELECT 3 AS part, clicks.id AS id, clicks.program_id AS program_id,
            clicks.referrer_id AS referrer_id, clicks.code_id AS code_id, codes.code AS code,
            clicks.occurred_at AS occurred_at, clicks.id AS click_id,
            CAST(NULL AS VARCHAR(16)) AS source, CAST(NULL AS BOOLEAN) AS disabled,
            CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS expires_at, clicks.is_bot AS is_bot,
            clicks.attributable AS attributable, clicks.customer_id AS customer_id
        FROM clicks JOIN codes ON codes.id = clicks.code_id
        WHERE clicks.program_id = :program AND clicks.customer_id = 'pgbench-' || :client_id || '-' || :k
        ORDER BY clicks.occurred_at DESC LIMIT 100) AS anon_2) AS anon_1
    LEFT OUTER JOIN referrers ON referrers.id = anon_1.referrer_id
ORDER BY anon_1.part, anon_1.occurred_at DESC \gset
INSERT INTO referrals (program_id, referrer_id, code_id, click_id, customer_id, email, source,
    occurred_at, id, created_at)
VALUES (:program, :referrer_id, :code_id, NULL, 'pgbench-' || :client_id || '-' || :k, NULL,
    'conversion', now(), gen_random_uuid(), now())
ON CONFLICT DO NOTHING RETURNING referrals.id AS referral_id, EXISTS (SELECT * FROM conversions
    WHERE conversions.program_id = :program AND conversions.customer_id = 'pgbench-' || :client_id || '-' || :k
    AND conversions.status = 'attributed' AND conversions.id != :conversion_id) AS earlier \gset
UPDATE conversions SET status = 'attributed', attribution_reason = 'explicit_code',
    attribution = ('{"model": "last_touch", "window_days": 30, "candidates": [{"kind": "code", "source": "explicit", "id": "' || :code_id || '", "referrer_id": "' || :referrer_id || '", "code": "' || :code || '", "occurred_at": null, "outcome": "won", "reason": "explicit_code"}]}')::json,
    referrer_id = :referrer_id, code_id = :code_id, referral_id = :referral_id
WHERE conversions.id = :conversion_id;
INSERT INTO rewards (program_id, conversion_id, rule_id, rule_version, referrer_id, recipient,
    recipient_id, entry_type, adjusts_reward_id, kind, fulfilment_method, unit, amount,
    original_amount, status, hold_until, approved_at, paid_at, payout_reference, reversed_at,
    reversal_reason, id, created_at)
VALUES (:program, :conversion_id, :rule_referrer, 1, :referrer_id, 'referrer', :external_id,
        'reward', NULL, 'fixed', 'ledger', 'USD', 10.00, 10.00, 'approved', now(), now(), NULL,
        NULL, NULL, NULL, gen_random_uuid(), now()),
    (:program, :conversion_id, :rule_referee, 1, :referrer_id, 'referee',
        'pgbench-' || :client_id || '-' || :k, 'reward', NULL, 'percent', 'ledger', 'USD',
        round(:cents / 1000.0, 2), round(:cents / 1000.0, 2), 'approved', now(), now(), NULL,
        NULL, NULL, NULL, gen_random_uuid(), now());
COMMIT;

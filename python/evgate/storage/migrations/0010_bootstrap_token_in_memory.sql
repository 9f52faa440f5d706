-- The bootstrap token (EVGATE_BOOTSTRAP_TOKEN) is no longer a row: each process checks it in
-- memory against the digest of its own setting, so that one node started with another value
-- cannot revoke the token of another node (issue 14). The rows earlier versions kept for it
-- would otherwise stay valid for ever, whatever the setting says now.
DELETE FROM api_tokens WHERE name = 'bootstrap';

-- A dealer's operation history also records who paused and resumed it (an admin, or the kill
-- switch with its reason) and every retry and cancel of one of its hedge jobs (actor, reason,
-- the job's status and error before): the audit trail outlives the job's last_error.
ALTER TABLE trading_account_operation
    DROP CONSTRAINT trading_account_operation_operation_type_check,
    ADD CONSTRAINT trading_account_operation_operation_type_check CHECK (operation_type IN (
        'CONNECT', 'DISCONNECT', 'ENABLE', 'DISABLE', 'UPDATE', 'CREDENTIAL_REVOKE',
        'CREDENTIAL_ROTATE', 'LINK', 'UNLINK', 'PAUSE', 'RESUME', 'HEDGE_RETRY',
        'HEDGE_CANCEL'));

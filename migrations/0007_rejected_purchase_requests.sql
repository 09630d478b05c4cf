-- The purchase request of each rejected payment (as far as its document says), so a
-- dispute without `paymentId` is matched against every legacy payment with its
-- `purchaseRequestId`, not only the imported ones: one imported and one rejected payment
-- with the same request make the dispute ambiguous (rejected), not the imported one's.

SET LOCAL ROLE escrow_ledger_owner;

ALTER TABLE legacy_import.rejects ADD COLUMN purchase_request text;
COMMENT ON COLUMN legacy_import.rejects.purchase_request IS 'Payments: the account key of purchaseRequestId when the rejected document has a readable one.';
CREATE INDEX rejects_purchase_request_idx ON legacy_import.rejects (purchase_request)
    WHERE collection = 'payments' AND purchase_request IS NOT NULL;

RESET ROLE;

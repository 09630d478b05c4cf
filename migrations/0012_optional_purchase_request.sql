-- A legacy payment may name no purchase request (`legacy-mongo.md`: a Mixed reference
-- that is null or absent is no reference; only the parties are required), and it is
-- imported as such. Live payments always name one.
SET LOCAL ROLE escrow_ledger_owner;

ALTER TABLE projection.payments_a ALTER COLUMN purchase_request DROP NOT NULL;
ALTER TABLE projection.payments_b ALTER COLUMN purchase_request DROP NOT NULL;
RESET ROLE;

#!/usr/bin/env bash
# The escrow story over HTTP with curl (the README's session): create, deposit, dispute,
# evidence, a split resolution with a fee, payouts. Needs a running `escrow-ledger serve`
# (API, default http://127.0.0.1:8080) and the outputs of `escrow-ledger token` for the
# three roles in c.txt, a.txt and f.txt (coordinator, admin, finance) in the current folder.
set -euo pipefail
API=${API:-http://127.0.0.1:8080}
COORD=$(sed -n 's/^token: //p' c.txt); ADMIN=$(sed -n 's/^token: //p' a.txt); FIN=$(sed -n 's/^token: //p' f.txt)
BUYER=6f1c2a9e-3b7d-4c1e-9a55-0d2f8e7b6a41; SELLER=2b8e4f10-7c6d-4e3a-8b21-5f9a0c3d7e62
echo '# create'
PAY=$(curl -s -X POST $API/v1/payments -H "Authorization: Bearer $COORD" -H 'Content-Type: application/json' \
  -d "{\"buyer\":{\"kind\":\"entity\",\"id\":\"$BUYER\"},\"seller\":{\"kind\":\"entity\",\"id\":\"$SELLER\"},\"purchase_request\":{\"kind\":\"external\",\"ref\":\"tmpl_8f2a\"},\"amount\":\"125.50\",\"asset\":\"USD\",\"provider\":\"stripe\"}")
echo "$PAY"; P=$(echo "$PAY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo '# deposit'
curl -s -X POST $API/v1/payments/$P/deposits -H "Authorization: Bearer $COORD" -H 'Idempotency-Key: dep-1' -H 'Content-Type: application/json' -d '{"amount":"125.50","reference":"ch_3PqX"}'; echo
echo '# dispute'
D=$(curl -s -X POST $API/v1/disputes -H "Authorization: Bearer $COORD" -H 'Content-Type: application/json' \
  -d "{\"payment_id\":\"$P\",\"opened_by\":{\"kind\":\"entity\",\"id\":\"$BUYER\"},\"role\":\"buyer\",\"reason\":\"not_as_described\",\"description\":\"wrong colour\"}")
echo "$D"; D=$(echo "$D" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo '# release refused while frozen'
curl -s -X POST $API/v1/payments/$P/releases -H "Authorization: Bearer $COORD" -H 'Idempotency-Key: rel-1' -H 'Content-Type: application/json' -d '{}'; echo
echo '# evidence'
curl -s -X POST $API/v1/disputes/$D/evidence -H "Authorization: Bearer $COORD" -H 'Content-Type: application/json' \
  -d "{\"submitted_by\":{\"kind\":\"entity\",\"id\":\"$BUYER\"},\"type\":\"image\",\"url\":\"https://img.example/1.png\"}"; echo
echo '# split resolution with a fee'
curl -s -X POST $API/v1/disputes/$D/resolution -H "Authorization: Bearer $ADMIN" -H 'Idempotency-Key: res-1' -H 'Content-Type: application/json' \
  -d '{"outcome":"split","seller_amount":"100.50","buyer_amount":"25.00","fees":[{"kind":"fee","amount":"2.50"}]}'; echo
echo '# payouts'
curl -s -X POST $API/v1/payments/$P/payouts -H "Authorization: Bearer $COORD" -H 'Idempotency-Key: po-1' -H 'Content-Type: application/json' -d '{"party":"seller","amount":"98.00","reference":"po_1"}'; echo
curl -s -X POST $API/v1/payments/$P/payouts -H "Authorization: Bearer $COORD" -H 'Idempotency-Key: po-2' -H 'Content-Type: application/json' -d '{"party":"buyer","amount":"25.00","reference":"po_2"}'; echo
echo '# finance may not post'
curl -s -X POST $API/v1/payments/$P/cancellation -H "Authorization: Bearer $FIN" -H 'Content-Type: application/json' -d '{"reason":"x"}'; echo
echo '# the audit trail'
curl -s $API/v1/payments/$P/events -H "Authorization: Bearer $FIN" | python3 -c 'import json,sys; [print(e["position"], e["event_type"], [(p["account"],p["amount"]) for p in e["postings"]]) for e in json.load(sys.stdin)["events"]]'

#!/usr/bin/env bash
# The escrow story over HTTP with curl (the README's session): create, deposit, dispute,
# evidence, a split resolution with a fee, payouts. Needs a running `escrow-ledger serve`
# (API, default http://127.0.0.1:8080) and the outputs of `escrow-ledger token` for the
# three roles in c.txt, a.txt and f.txt (coordinator, admin, finance) in the current folder.
# Every run tells a new story (its idempotency keys and deposit reference are the new
# payment's), and a step answering other than the session shows stops it with exit 1.
set -euo pipefail
API=${API:-http://127.0.0.1:8080}
COORD=$(sed -n 's/^token: //p' c.txt); ADMIN=$(sed -n 's/^token: //p' a.txt); FIN=$(sed -n 's/^token: //p' f.txt)
BUYER=6f1c2a9e-3b7d-4c1e-9a55-0d2f8e7b6a41; SELLER=2b8e4f10-7c6d-4e3a-8b21-5f9a0c3d7e62
J='Content-Type: application/json'

# call STATUS TOKEN PATH BODY [IDEMPOTENCY-KEY]: POSTs, prints the answer, keeps it in $OUT,
# and stops the story when the status is not STATUS.
call() {
    local want=$1 token=$2 path=$3 body=$4 key=${5:-} answer status
    local args=(-s -X POST "$API$path" -H "Authorization: Bearer $token" -H "$J" -d "$body" -w '\n%{http_code}')
    [ -z "$key" ] || args+=(-H "Idempotency-Key: $key")
    answer=$(curl "${args[@]}")
    status=${answer##*$'\n'}
    OUT=${answer%$'\n'*}
    echo "$OUT"
    if [ "$status" != "$want" ]; then
        echo "story.sh: POST $path answered $status, expected $want" >&2
        exit 1
    fi
}
id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$OUT"; }

echo '# create'
call 201 "$COORD" /v1/payments "{\"buyer\":{\"kind\":\"entity\",\"id\":\"$BUYER\"},\"seller\":{\"kind\":\"entity\",\"id\":\"$SELLER\"},\"purchase_request\":{\"kind\":\"external\",\"ref\":\"tmpl_8f2a\"},\"amount\":\"125.50\",\"asset\":\"USD\",\"provider\":\"stripe\"}"
P=$(id); K=${P:0:8}
echo '# deposit'
call 200 "$COORD" "/v1/payments/$P/deposits" "{\"amount\":\"125.50\",\"reference\":\"ch_$K\"}" "dep-$K"
echo '# dispute'
call 201 "$COORD" /v1/disputes "{\"payment_id\":\"$P\",\"opened_by\":{\"kind\":\"entity\",\"id\":\"$BUYER\"},\"role\":\"buyer\",\"reason\":\"not_as_described\",\"description\":\"wrong colour\"}"
D=$(id)
echo '# release refused while frozen'
call 422 "$COORD" "/v1/payments/$P/releases" '{}' "rel-$K"
echo '# evidence'
call 200 "$COORD" "/v1/disputes/$D/evidence" "{\"submitted_by\":{\"kind\":\"entity\",\"id\":\"$BUYER\"},\"type\":\"image\",\"url\":\"https://img.example/1.png\"}"
echo '# split resolution with a fee'
call 200 "$ADMIN" "/v1/disputes/$D/resolution" '{"outcome":"split","seller_amount":"100.50","buyer_amount":"25.00","fees":[{"kind":"fee","amount":"2.50"}]}' "res-$K"
echo '# payouts'
call 200 "$COORD" "/v1/payments/$P/payouts" '{"party":"seller","amount":"98.00","reference":"po_1"}' "po1-$K"
call 200 "$COORD" "/v1/payments/$P/payouts" '{"party":"buyer","amount":"25.00","reference":"po_2"}' "po2-$K"
echo '# finance may not post'
call 403 "$FIN" "/v1/payments/$P/cancellation" '{"reason":"x"}'
echo '# the audit trail'
curl -sf "$API/v1/payments/$P/events" -H "Authorization: Bearer $FIN" | python3 -c 'import json,sys; [print(e["position"], e["event_type"], [(p["account"],p["amount"]) for p in e["postings"]]) for e in json.load(sys.stdin)["events"]]'

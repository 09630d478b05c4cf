//! Writing payment rows: one `INSERT` of typed arrays (`UNNEST`), sent in the binary
//! protocol. A JSON document of the rows (`jsonb_populate_recordset`) cost the server
//! about 35 µs a row to parse, most of a rebuild's time in this projector.

use sqlx::types::Json;
use sqlx::PgConnection;

use super::PaymentRow;

/// One column of `rows`.
fn col<T>(rows: &[PaymentRow], f: impl Fn(&PaymentRow) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// The most metadata one statement carries. A `jsonb[]` parameter may not pass 1 GB, and
/// a payment's metadata may take most of a 2 MiB request: a batch of a thousand such
/// payments in one statement would fail, and fail again on every retry.
pub const STATEMENT_BYTES: usize = 32 * 1024 * 1024;

/// Inserts `rows` into `table` (`projection.payments_<side>`), in as many statements as
/// their metadata needs (see [`STATEMENT_BYTES`]).
pub(super) async fn insert_rows(
    conn: &mut PgConnection,
    table: &str,
    rows: &[PaymentRow],
) -> Result<(), sqlx::Error> {
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in rows.iter().enumerate() {
        let size = r.metadata.as_ref().map_or(0, |m| m.to_string().len());
        if i > start && bytes + size >= STATEMENT_BYTES {
            insert_statement(conn, table, &rows[start..i]).await?;
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    insert_statement(conn, table, &rows[start..]).await
}

/// One `INSERT` of `rows`.
async fn insert_statement(
    conn: &mut PgConnection,
    table: &str,
    rows: &[PaymentRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (payment_id, version, status, asset, provider, buyer, seller, \
             purchase_request, seller_offer, metadata, amount, deposited, excess, excess_held, \
             held, released, refunded, fees, aml_fees, seller_share, buyer_share, \
             paid_out_seller, paid_out_buyer, open_dispute_id, created_at, funded_at, \
             released_at, refunded_at, cancelled_at, disputed_at, paid_out_at, updated_at, \
             last_position, created_tx, created_position, escrow_adjusted) \
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::numeric[], \
             $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[], $16::numeric[], \
             $17::numeric[], $18::numeric[], $19::numeric[], $20::numeric[], $21::numeric[], \
             $22::numeric[], $23::numeric[], $24::uuid[], $25::timestamptz[], \
             $26::timestamptz[], $27::timestamptz[], $28::timestamptz[], $29::timestamptz[], \
             $30::timestamptz[], $31::timestamptz[], $32::timestamptz[], $33::int8[], $34::int8[], $35::int8[], $36::numeric[])"
    ))
    .bind(col(rows, |r| r.payment_id))
    .bind(col(rows, |r| r.version))
    .bind(col(rows, |r| r.status.clone()))
    .bind(col(rows, |r| r.asset.clone()))
    .bind(col(rows, |r| r.provider.clone()))
    .bind(col(rows, |r| r.buyer.clone()))
    .bind(col(rows, |r| r.seller.clone()))
    .bind(col(rows, |r| r.purchase_request.clone()))
    .bind(col(rows, |r| r.seller_offer.clone()))
    .bind(col(rows, |r| r.metadata.clone().map(Json)))
    .bind(col(rows, |r| r.amount))
    .bind(col(rows, |r| r.deposited))
    .bind(col(rows, |r| r.excess))
    .bind(col(rows, |r| r.excess_held))
    .bind(col(rows, |r| r.held))
    .bind(col(rows, |r| r.released))
    .bind(col(rows, |r| r.refunded))
    .bind(col(rows, |r| r.fees))
    .bind(col(rows, |r| r.aml_fees))
    .bind(col(rows, |r| r.seller_share))
    .bind(col(rows, |r| r.buyer_share))
    .bind(col(rows, |r| r.paid_out_seller))
    .bind(col(rows, |r| r.paid_out_buyer))
    .bind(col(rows, |r| r.open_dispute_id))
    .bind(col(rows, |r| r.created_at))
    .bind(col(rows, |r| r.funded_at))
    .bind(col(rows, |r| r.released_at))
    .bind(col(rows, |r| r.refunded_at))
    .bind(col(rows, |r| r.cancelled_at))
    .bind(col(rows, |r| r.disputed_at))
    .bind(col(rows, |r| r.paid_out_at))
    .bind(col(rows, |r| r.updated_at))
    .bind(col(rows, |r| r.last_position))
    .bind(col(rows, |r| r.created_tx))
    .bind(col(rows, |r| r.created_position))
    .bind(col(rows, |r| r.escrow_adjusted))
    .execute(conn)
    .await?;
    Ok(())
}

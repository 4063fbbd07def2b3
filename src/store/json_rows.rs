//! Many rows in one JSON parameter, so that a statement's text does not depend on how many
//! rows it carries.
//!
//! Why: sqlx prepares each distinct statement text once per connection and keeps the last
//! 100. On PostgreSQL a text not in that cache costs a round trip to prepare it, and one more
//! to close the statement it evicts, before the round trip that runs it. A multi-row
//! `VALUES ($1, …, $n)` has a new text for every batch size, and group commits come in every
//! size, so under an alert storm nearly every batch statement was prepared anew: up to three
//! round trips where one will do. With the rows in one JSON array (`[[col0, col1, …], …]`) the
//! text is fixed, prepared once per connection, and a batch of any size is one statement
//! and one round trip. SQLite gains the parse it no longer repeats.
//!
//! Both engines read the array with `->>` (PostgreSQL's `json` operator; SQLite's since
//! 3.38): a JSON string gives its text, a number its digits or integer, `null` SQL NULL.

use super::Backend;

/// How a column is read out of its JSON value.
#[derive(Clone, Copy)]
pub(super) enum Col {
    /// A JSON string (or `null`) as text.
    Text,
    /// A JSON integer (or `null`) as a 64-bit integer.
    Int,
}

/// The table function that yields one row per element of the JSON array in `$param`.
fn elements(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Postgres => format!("json_array_elements(CAST(${param} AS json))"),
        Backend::Sqlite => format!("json_each(${param})"),
    }
}

/// `(SELECT … ) AS v`: a derived table with the named columns, one row per element of the
/// JSON array of arrays in `$param` (column `i` is element `i` of each inner array).
pub(super) fn rows(backend: Backend, param: usize, cols: &[(&str, Col)]) -> String {
    let mut select = String::new();
    for (i, (name, col)) in cols.iter().enumerate() {
        if i > 0 {
            select.push_str(", ");
        }
        match col {
            Col::Text => select.push_str(&format!("value ->> {i} AS {name}")),
            Col::Int => select.push_str(&format!("CAST(value ->> {i} AS BIGINT) AS {name}")),
        }
    }
    format!("(SELECT {select} FROM {}) AS v", elements(backend, param))
}

/// Rows to insert into one table, carried as one JSON array.
pub(super) struct Insert {
    table: &'static str,
    cols: &'static [(&'static str, Col)],
    rows: Vec<serde_json::Value>,
}

impl Insert {
    /// Rows for `table`'s `cols`; each row is a JSON array with one element per column.
    pub(super) fn new(
        table: &'static str,
        cols: &'static [(&'static str, Col)],
        rows: Vec<serde_json::Value>,
    ) -> Insert {
        Insert { table, cols, rows }
    }

    /// `INSERT INTO table (c0, c1, …) SELECT c0, c1, … FROM` [`rows`] of `$param`.
    fn sql(&self, backend: Backend, param: usize) -> String {
        let names = self
            .cols
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM {}",
            self.table,
            rows(backend, param, self.cols)
        )
    }
}

/// Writes the inserts that have rows, in order. On PostgreSQL they are one statement
/// (`WITH a AS (INSERT …), b AS (INSERT …) INSERT …`): one round trip for all of them. The
/// tables have no foreign keys between them, so the parts need not see one another's rows.
/// SQLite has no `INSERT` inside `WITH` and no round trips to save: one statement each.
pub(super) async fn insert_all(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    inserts: Vec<Insert>,
) -> Result<(), super::StoreError> {
    let inserts: Vec<Insert> = inserts.into_iter().filter(|i| !i.rows.is_empty()).collect();
    match backend {
        Backend::Postgres if inserts.len() > 1 => {
            let mut sql = String::from("WITH ");
            let last = inserts.len() - 1;
            for (n, insert) in inserts.iter().enumerate() {
                if n == last {
                    sql.push(' ');
                    sql.push_str(&insert.sql(backend, n + 1));
                } else {
                    if n > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("w{n} AS ({})", insert.sql(backend, n + 1)));
                }
            }
            let mut q = sqlx::query(&sql);
            for insert in inserts {
                q = q.bind(serde_json::Value::Array(insert.rows).to_string());
            }
            q.execute(&mut *conn).await?;
        }
        _ => {
            for insert in inserts {
                sqlx::query(&insert.sql(backend, 1))
                    .bind(serde_json::Value::Array(insert.rows).to_string())
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    Ok(())
}

/// `SELECT value FROM …`: the strings of the JSON array in `$param`, one row each (for
/// `column IN (…)`).
pub(super) fn texts(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Postgres => {
            format!("SELECT value FROM json_array_elements_text(CAST(${param} AS json))")
        }
        Backend::Sqlite => format!("SELECT value FROM json_each(${param})"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Col, *};

    #[test]
    fn the_statement_text_names_columns_by_position() {
        const COLS: &[(&str, Col)] = &[("id", Col::Text), ("n", Col::Int)];
        let cols = COLS;
        assert_eq!(
            Insert::new("t", COLS, Vec::new()).sql(Backend::Sqlite, 1),
            "INSERT INTO t (id, n) SELECT id, n FROM (SELECT value ->> 0 AS id, \
             CAST(value ->> 1 AS BIGINT) AS n FROM json_each($1)) AS v"
        );
        assert!(rows(Backend::Postgres, 2, cols)
            .ends_with("FROM json_array_elements(CAST($2 AS json))) AS v"));
    }

    /// The same JSON reads back as the same values: strings with quotes and JSON inside them,
    /// integers past 2^53, nulls. (On PostgreSQL every batch statement of the daemon tests
    /// under `RUNBOOKD_TEST_STATE=postgres` goes through these.)
    #[tokio::test]
    async fn sqlite_reads_strings_integers_and_nulls_back() {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        let json = serde_json::json!([
            ["a \"quoted\" {\"json\": 1}", 9_007_199_254_740_993_i64],
            [null, null]
        ])
        .to_string();
        let sql = format!(
            "SELECT id, n FROM {}",
            rows(Backend::Sqlite, 1, &[("id", Col::Text), ("n", Col::Int)])
        );
        let got = sqlx::query(&sql)
            .bind(json)
            .fetch_all(&mut conn)
            .await
            .expect("select");
        let first: (Option<String>, Option<i64>) = (got[0].get(0), got[0].get(1));
        assert_eq!(
            first,
            (
                Some("a \"quoted\" {\"json\": 1}".into()),
                Some(9_007_199_254_740_993)
            )
        );
        let second: (Option<String>, Option<i64>) = (got[1].get(0), got[1].get(1));
        assert_eq!(second, (None, None));
    }
}

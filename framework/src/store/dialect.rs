//! Where SQLite and PostgreSQL differ: the few pieces of SQL that each
//! dialect writes its own way. Every other statement is shared text.

/// The SQL dialect of the state database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The rows of the JSON array in parameter `$n`, each as a JSON `value`
    /// (a number is read with `CAST(value AS BIGINT)`, a field with
    /// `value ->> 0` or `value ->> 'name'`). Bulk statements take their
    /// rows this way so that their text is fixed (and prepared once)
    /// whatever the number of rows.
    pub(crate) fn json_rows(self, n: usize) -> String {
        match self {
            Self::Sqlite => format!("json_each(${n})"),
            Self::Postgres => format!("jsonb_array_elements(${n}::jsonb) AS json_row(value)"),
        }
    }

    /// The strings of the JSON array in parameter `$n`, each as a text
    /// `value`, to compare with text columns.
    pub(crate) fn json_texts(self, n: usize) -> String {
        match self {
            Self::Sqlite => format!("json_each(${n})"),
            Self::Postgres => {
                format!("jsonb_array_elements_text(${n}::jsonb) AS json_row(value)")
            }
        }
    }

    /// `(…), (…)`: the placeholders of `rows` rows of `columns` values, to
    /// be bound in order. SQLite's are anonymous (`?`): it finds a numbered
    /// parameter's name by a linear search, which made binding a statement
    /// of thousands of them take quadratic time. PostgreSQL knows only
    /// numbered ones.
    pub(crate) fn values_list(self, rows: usize, columns: usize) -> String {
        let mut n = 0;
        let mut row = |_| {
            let values: Vec<String> = (0..columns)
                .map(|_| match self {
                    Self::Sqlite => "?".to_string(),
                    Self::Postgres => {
                        n += 1;
                        format!("${n}")
                    }
                })
                .collect();
            format!("({})", values.join(", "))
        };
        (0..rows).map(&mut row).collect::<Vec<_>>().join(", ")
    }

    /// What follows a `SELECT` of queued rows that a transaction is about
    /// to take: in PostgreSQL, lock them and pass over rows another
    /// transaction holds, so that writers taking work at once never wait on
    /// (or take) the same rows. SQLite has one writer at a time.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// [`Dialect::skip_locked`] for a `SELECT` that joins other tables:
    /// only the rows of `table` (an alias) are locked.
    pub(crate) fn skip_locked_of(self, table: &str) -> String {
        match self {
            Self::Sqlite => String::new(),
            Self::Postgres => format!(" FOR UPDATE OF {table} SKIP LOCKED"),
        }
    }

    /// What follows a `SELECT` of a row that must not change (or go)
    /// before the transaction ends, while others may read it too.
    pub(crate) fn for_share(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR SHARE",
        }
    }

    /// What follows a `SELECT` of a row the transaction decides on, so
    /// that concurrent deciders queue behind it (PostgreSQL); SQLite's
    /// single writer already does.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists_bind_every_value_in_order() {
        assert_eq!(Dialect::Sqlite.values_list(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(
            Dialect::Postgres.values_list(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Dialect::Postgres.values_list(1, 1), "($1)");
    }
}

//! The shared table of entry names (`entry-names.txt`): parse, and write back what parses.

use p6os_layout::{Counter, EntryName, Slot};

/// `(file name, expected reading)` rows of the table.
pub fn table() -> Vec<(String, Option<EntryName>)> {
    include_str!("entry-names.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (file, expect) = line.split_once('|').expect("`file | expectation`");
            let expect = expect.trim();
            let reading = (expect != "-").then(|| {
                let f: Vec<&str> = expect.split_whitespace().collect();
                let counter = match f[2] {
                    "blessed" => Counter::Blessed,
                    c => {
                        let (l, d) = c.split_once('-').unwrap();
                        Counter::Trial {
                            left: l.parse().unwrap(),
                            done: d.parse().unwrap(),
                        }
                    }
                };
                EntryName::new(f[0], Slot::parse(f[1]).unwrap(), counter)
            });
            (file.trim().to_string(), reading)
        })
        .collect()
}

#[test]
fn every_row_reads_as_the_table_says_and_writes_back() {
    let rows = table();
    assert!(rows.len() > 20);
    for (file, expect) in rows {
        let got = EntryName::parse(&file);
        assert_eq!(got, expect, "{file}");
        if let Some(name) = got {
            // `+L-0` is read as `+L` and written back canonically; the loader never writes it.
            if !file.ends_with("-0.conf") {
                assert_eq!(name.file_name(), file, "{file} written back");
            }
            assert_eq!(EntryName::parse(&name.file_name()), Some(name), "{file}");
        }
    }
}

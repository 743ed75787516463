//! `config set|show|history`: remote reconfiguration from the operator's side.

use std::path::{Path, PathBuf};

use p6os_protocol::siteconfig::{
    ConfigAssignment, ConfigHistoryPage, ConfigRejected, ConfigShow, SetConfigRequest,
    SetConfigResponse,
};
use p6os_protocol::API;

use super::{all_pages, labels, print_json, Client, Failure};
use crate::cli::ConfigCommand;

pub fn run(client: &Client, command: ConfigCommand) -> Result<(), Failure> {
    match command {
        ConfigCommand::Set {
            file,
            signature,
            id,
            selector,
            json,
        } => set(client, &file, signature, (id, selector), json),
        ConfigCommand::Show { id, json } => {
            let shown: ConfigShow = client.get(&format!("{API}/appliances/{id}/config"))?;
            if json {
                print_json(&shown);
            } else {
                println!("{}", assignment(&shown.current));
                println!(
                    "{}",
                    serde_json::to_string_pretty(&shown.document).unwrap_or_default()
                );
            }
            Ok(())
        }
        ConfigCommand::History { id, limit, json } => {
            let all = all_pages(
                client,
                &format!("{API}/appliances/{id}/config/history"),
                &[],
                limit,
                |p: ConfigHistoryPage| (p.items, p.next),
            )?;
            if json {
                print_json(&all);
            } else {
                for a in &all {
                    println!("{}", assignment(a));
                }
            }
            Ok(())
        }
    }
}

fn read(path: &Path, what: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read {what} {}: {e}", path.display())))
}

fn set(
    client: &Client,
    file: &Path,
    signature: Option<PathBuf>,
    (id, selector): (Option<String>, Option<String>),
    json: bool,
) -> Result<(), Failure> {
    let document = read(file, "the document")?;
    let beside = PathBuf::from(format!("{}.sig", file.display()));
    let signature = match signature {
        Some(sig) => Some(read(&sig, "the signature")?),
        None if beside.exists() => Some(read(&beside, "the signature")?),
        None => None,
    };
    let req = SetConfigRequest {
        id,
        selector: selector
            .map(|s| labels(&[s]))
            .transpose()?
            .unwrap_or_default(),
        document,
        signature,
    };
    let r = client
        .agent
        .put(client.url(&format!("{API}/config")))
        .header("Authorization", client.auth())
        .send_json(&req);
    // A refused document's answer lists its problems: read it here rather than in `finish`.
    let mut response =
        r.map_err(|e| Failure::Other(format!("cannot reach {}: {e}", client.base)))?;
    if response.status().as_u16() == 400 {
        let body = response
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| Failure::Other(format!("cannot read the console's answer: {e}")))?;
        return Err(Failure::Api(rejected(file, &body)));
    }
    let answer: SetConfigResponse = client.finish(Ok(response))?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    println!(
        "site configuration {} ({}{}) set for {} appliance{}",
        answer.config,
        answer.digest,
        answer
            .serial
            .map(|s| format!(", signed serial {s}"))
            .unwrap_or_default(),
        answer.targets.len(),
        if answer.targets.len() == 1 { "" } else { "s" }
    );
    for id in answer.targets {
        println!("  {id}");
    }
    Ok(())
}

/// The console's refusal (400): its message and every problem of the document,
/// `FILE:LINE:COLUMN: ...`.
fn rejected(file: &Path, body: &[u8]) -> String {
    let Ok(r) = serde_json::from_slice::<ConfigRejected>(body) else {
        return "the console answered 400".to_string();
    };
    let mut out = match &r.field {
        Some(f) if r.problems.is_empty() => format!("the console answered 400: {f}: {}", r.error),
        _ => format!("the console answered 400: {}: {}", file.display(), r.error),
    };
    for p in &r.problems {
        out.push_str(&format!("\n{}:{}:{}: ", file.display(), p.line, p.column));
        if !p.field.is_empty() {
            out.push_str(&format!("{}: ", p.field));
        }
        out.push_str(&p.message);
        if let Some(h) = &p.hint {
            out.push_str(&format!("\n  hint: {h}"));
        }
    }
    out
}

fn assignment(a: &ConfigAssignment) -> String {
    let outcome = a.outcome.map_or("not reported yet", |o| o.as_str());
    let now = crate::api::now();
    let mut line = format!(
        "#{} configuration {} {} set {}: {outcome}",
        a.seq,
        a.config,
        a.digest,
        super::format::ago(Some(a.set_at), now)
    );
    if let Some(s) = a.serial {
        line.push_str(&format!(" (signed serial {s})"));
    }
    for p in &a.problems {
        line.push_str(&format!("\n    {p}"));
    }
    line
}

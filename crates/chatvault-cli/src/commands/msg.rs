//! `chatvault msg ...`: messages.

use super::{parse_id, Access, Context};
use crate::cli::MsgCommand;
use crate::output::{self, Table};
use anyhow::{Context as _, Result};
use chatvault::{ListMessages, NewMessage};
use std::io::Read;

pub async fn run(ctx: &Context, cmd: MsgCommand) -> Result<()> {
    match cmd {
        MsgCommand::Add {
            conversation,
            role,
            content,
            json,
        } => {
            let conversation = parse_id(&conversation)?;
            let content = if content == "-" {
                read_stdin()?
            } else {
                content
            };
            let vault = ctx.open(Access::Existing).await?;
            let m = vault
                .add_message(conversation, NewMessage::new(role, content))
                .await?;
            if json.json {
                output::json(&m)
            } else {
                outln!("{}", m.id);
                Ok(())
            }
        }
        MsgCommand::Ls {
            conversation,
            limit,
            json,
        } => {
            let vault = ctx.open(Access::Existing).await?;
            let mut page = vault
                .messages(
                    parse_id(&conversation)?,
                    ListMessages {
                        before: None,
                        limit,
                    },
                )
                .await?;
            page.items.reverse();
            if json.json {
                return output::json(&page.items);
            }
            let mut t = Table::new(["ID", "CREATED", "ROLE", "CONTENT"]);
            for m in &page.items {
                t.row([
                    m.id.to_string(),
                    output::time(m.created_at),
                    m.role.to_string(),
                    output::text(&output::one_line(&m.content, 60)),
                ]);
            }
            t.print()?;
            Ok(())
        }
        MsgCommand::Rm { id } => {
            let vault = ctx.open(Access::Existing).await?;
            vault.delete_message(parse_id(&id)?).await?;
            Ok(())
        }
    }
}

/// Message text from standard input; one trailing newline (as `echo`
/// adds) is dropped.
fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read message content from standard input (is it UTF-8?)")?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

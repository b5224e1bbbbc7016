//! `chatvault msg ...`: messages.

use super::{parse_id, Access, Context};
use crate::cli::MsgCommand;
use crate::output::{self, Table};
use anyhow::{Context as _, Result};
use chatvault::{ConversationId, ListMessages, Message, NewMessage, Vault};
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
            output::created(json.json, &m, m.id)
        }
        MsgCommand::Ls {
            conversation,
            limit,
            json,
        } => {
            let vault = ctx.open(Access::Existing).await?;
            let messages = latest(&vault, parse_id(&conversation)?, limit).await?;
            if json.json {
                return output::json(&messages);
            }
            let mut t = Table::new(["ID", "CREATED", "ROLE", "CONTENT"]);
            for m in &messages {
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
/// The newest `limit` messages of a conversation, oldest first (the order
/// they are read in).
pub(super) async fn latest(
    vault: &Vault,
    conversation: ConversationId,
    limit: usize,
) -> Result<Vec<Message>> {
    let mut page = vault
        .messages(
            conversation,
            ListMessages {
                before: None,
                limit,
            },
        )
        .await?;
    page.items.reverse();
    Ok(page.items)
}

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

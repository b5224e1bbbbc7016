//! `chatvault msg ...`: messages.

use super::{parse_id, Access, Context};
use crate::cli::MsgCommand;
use crate::output::{self, Table};
use anyhow::{bail, Context as _, Result};
use chatvault::{ConversationId, ListMessages, Message, NewMessage, Vault};
use chatvault_core::{MessageCursor, Page};
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
            before,
            json,
        } => {
            let conversation: ConversationId = parse_id(&conversation)?;
            let vault = ctx.open(Access::Existing).await?;
            let before = match before {
                Some(id) => Some(cursor_at(&vault, conversation, &id).await?),
                None => None,
            };
            let page = page(&vault, conversation, limit, before).await?;
            output::warn_damaged("message", &page.damaged);
            // The first (oldest) one listed is where the next page starts.
            let older = page.next_cursor.and(page.items.first()).map(|m| m.id);
            if json.json {
                output::json(&output::with_damaged(&page.items, &page.damaged)?)?;
            } else {
                let mut t = Table::new(["ID", "CREATED", "ROLE", "CONTENT"]);
                for m in &page.items {
                    t.row([
                        m.id.to_string(),
                        output::ago(m.created_at),
                        m.role.to_string(),
                        output::text(&output::one_line(&m.content, 60)),
                    ]);
                }
                t.print()?;
            }
            if let Some(id) = older {
                // On stderr, so it never mixes into the table or the JSON.
                eprintln!("older messages: chatvault msg ls {conversation} --before {id}");
            }
            Ok(())
        }
        MsgCommand::Rm { id } => {
            let vault = ctx.open(Access::Existing).await?;
            vault.delete_message(parse_id(&id)?).await?;
            Ok(())
        }
    }
}

/// The newest `limit` messages of a conversation written before `before`
/// (all of them if `None`), oldest first (the order they are read in); its
/// `next_cursor` says whether older ones exist.
pub(super) async fn page(
    vault: &Vault,
    conversation: ConversationId,
    limit: usize,
    before: Option<MessageCursor>,
) -> Result<Page<Message, MessageCursor>> {
    let mut page = vault
        .messages(conversation, ListMessages { before, limit })
        .await?;
    page.items.reverse();
    Ok(page)
}

/// The listing position of message `id` of `conversation`: `--before`
/// lists what was written before it.
async fn cursor_at(vault: &Vault, conversation: ConversationId, id: &str) -> Result<MessageCursor> {
    let m = vault
        .message(parse_id(id)?)
        .await
        .with_context(|| format!("--before {id}"))?;
    if m.conversation_id != conversation {
        bail!(
            "--before {id}: that message belongs to conversation {}, not {conversation}",
            m.conversation_id
        );
    }
    Ok(MessageCursor {
        created_at: m.created_at,
        id: m.id,
    })
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

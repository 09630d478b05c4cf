//! Taking what waits in a queue as one batch: the gathering step shared by the group
//! committers and the gathered stream readers.

use tokio::sync::{mpsc, Mutex};

/// Waits for the first item, then takes whatever else is already waiting, up to `max`
/// in all. `None` once every sender is gone. Workers sharing the queue take turns: one
/// waits for the next batch while the others work on theirs.
pub(super) async fn next_batch<T>(
    receiver: &Mutex<mpsc::Receiver<T>>,
    max: usize,
) -> Option<Vec<T>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_what_waits_up_to_the_most_and_none_once_closed() {
        let (sender, receiver) = mpsc::channel(16);
        let receiver = Mutex::new(receiver);
        for i in 0..5 {
            sender.send(i).await.unwrap();
        }
        assert_eq!(next_batch(&receiver, 3).await, Some(vec![0, 1, 2]));
        assert_eq!(next_batch(&receiver, 3).await, Some(vec![3, 4]));
        drop(sender);
        assert_eq!(next_batch(&receiver, 3).await, None);
    }
}

// Package ship is the logagent's one Kafka producer. Tailers hand it
// records many at once with a Batch (Send is a Batch of one); Run batches
// them, encodes each partition's share as one record batch (produce.go),
// sends it over the Transport of
// github.com/segmentio/kafka-go (RawProduce: connections, metadata, leader
// routing, TLS, SASL) and calls each record's Ack once Kafka has
// acknowledged it. The agent checkpoints a file's offset in etcd only after
// those acks, so the invariants below are what at-least-once delivery rests on.
//
// # Invariants
//
//   - Ack exactly once, after Kafka. Every record Send accepted (Send returned
//     nil, or Batch.Send counted it) has its Ack called exactly once (for a
//     RangeAcker, possibly as part of a run), from Run's goroutine: with a nil
//     error after Kafka acknowledged the record (acks=all by default, so every
//     in-sync replica has it), or with a *RejectedError after it failed in a
//     way no retry can fix, or with ErrFenced if it was dropped unwritten
//     because the gate (SetGate) was closed when its turn came: the agent
//     reads such records again and never counts them as done. If Run stops first (its context ends), the
//     records not yet acknowledged are never acked: the agent has not
//     checkpointed them and reads them again after a restart.
//
//   - Order per key. Records of one topic with the same non-empty key reach
//     Kafka, and are acked, in the order Send accepted them. The
//     partitioner is kafka-go's Murmur2Balancer, the same hash as the Java
//     client's default partitioner, so a Java or franz-go producer (or a
//     consumer reasoning about keys) places a key on the same partition as
//     logferry. (kafka-go's Hash balancer is FNV-1a, which no other
//     client uses by default.)
//     Records with an empty key are spread over partitions at random and
//     have no order among themselves.
//
//     Order survives retries because one batch is in flight at a time: the
//     next batch is not written until the current one is completely acked.
//     Within a batch, each write call carries exactly one produce request
//     per partition (the shipper encodes each partition's records as one
//     record batch, produce.go, and a call never holds more than BatchSize
//     records or BatchBytes bytes), a partition's request succeeds or fails as a
//     whole, and a retry resends only the failed records, still in Send
//     order, before anything later of that partition is written. The price
//     is head-of-line blocking: while one partition refuses writes (a
//     leader election, usually seconds), the records of the other
//     partitions in the same batch are acked but the next batch waits.
//     The next batch is taken and encoded meanwhile, and sent once the
//     one in flight is acked. The benchmark ships about 1.5 million
//     records of 150 B per second this way against an in-process broker,
//     above what a host's tailers produce.
//
//   - Bounded memory. Send blocks while the bytes of records accepted but not
//     yet acked would exceed MaxInflightBytes, and the bytes are released when
//     the record is acked. During a Kafka outage tailers therefore block, memory
//     stays under the bound, nothing is dropped, and shipping resumes by itself.
//     A record larger than the bound counts as exactly the bound, so it waits
//     for everything else to drain instead of deadlocking.
//
//   - Retry what can succeed; reject what cannot. Network errors, timeouts
//     and Kafka errors such as NOT_ENOUGH_REPLICAS, LEADER_NOT_AVAILABLE,
//     NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT or UNKNOWN_TOPIC_OR_PARTITION
//     are retried with capped exponential backoff, forever, until Run's
//     context ends. (So a topic that does not exist, on a cluster that does
//     not create topics, holds shipping up until someone creates it.) Errors that concern one record or one topic and cannot
//     change on retry (MESSAGE_TOO_LARGE for a record alone, INVALID_TOPIC,
//     TOPIC_AUTHORIZATION_FAILED, INVALID_RECORD, POLICY_VIOLATION, ...)
//     are not retried: the record is acked with a *RejectedError
//     (errors.Is(err, ErrRejected)), counted in
//     logferry_ship_rejected_records_total{reason} and logged with its
//     topic, and the records after it carry on. A rejected record would
//     otherwise block its file, and with the memory bound every other file,
//     for ever; acking it with an error lets the agent report it and move on,
//     as the design asks of bad input. Errors that concern every record
//     (authentication, cluster authorization, unsupported versions, anything
//     unknown) are retried like transient ones, and logged at error level:
//     failing every record would turn a configuration mistake into mass data
//     loss, while blocking keeps the data until an operator fixes it.
//
//     Kafka answers for a partition's whole batch, so MESSAGE_TOO_LARGE,
//     INVALID_RECORD or INVALID_TIMESTAMP for a batch of several records may
//     be the fault of one record, or (MESSAGE_TOO_LARGE) of a topic whose
//     max.message.bytes is below --kafka-batch-bytes: the records are written
//     again in halved batches until the error is a lone record's own, and
//     only that record is rejected. A topic too small for the batches keeps
//     the smaller size from then on (logged once). A record whose encoded
//     size exceeds --kafka-batch-bytes is rejected without asking Kafka, as
//     is a record whose topic is not a legal Kafka topic name.
//
//   - Shutdown. Tailers stop sending, the agent calls Flush with a deadline,
//     then cancels Run's context. Run does not flush by itself; it waits, at
//     most --kafka-write-timeout, for produce requests already on the wire,
//     and no goroutine of this package outlives it.
//
//   - Gate. With a gate set, it is asked right before each produce request
//     is written; while it is closed, nothing more goes on the wire. A
//     request already written when the gate closed may still be appended
//     by Kafka: that is the bound of what a paused agent can write late.
//
// Send copies a record's key, value and headers, already encoded as a
// record batch holds them, into chunks of memory that hold no pointers
// (the arena); the caller may reuse its slices at once. An accepted record
// costs the shipper one small entry beside its bytes, so neither
// allocation nor the garbage collector's work grows per record: at a
// million lines a second that work, not Kafka, was the shipper's cost.
package ship

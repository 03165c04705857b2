package eddy.bench;

import java.io.FileOutputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.JoinFunction;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

import eddy.gen.Generators;
import eddy.gen.Generators.Auction;
import eddy.gen.Generators.Bid;
import eddy.gen.Generators.Click;
import eddy.gen.Generators.Kind;
import eddy.gen.Generators.Person;

/**
 * The Apache Flink baseline of `make bench`: runs one case of docs/generators.md ("Benchmark
 * cases") in a local MiniCluster in this JVM and prints one line of figures.
 *
 * <pre>
 * EddyBaseline --case keyed-count|q5|q7|q8|file-count[-sql] --parallelism P --output FILE
 *              [--count N] [--seed 42] [--state heap|rocksdb] [--input FILE] [--warmup N]
 * </pre>
 * No checkpoints, object reuse on, heap state unless --state rocksdb. --warmup N first runs the
 * job on N records (file-count: N lines) unmeasured, in the same JVM.
 */
public final class EddyBaseline {
    static final long SEED = Generators.DEFAULT_SEED;
    static final long START = Generators.DEFAULT_START_TIME;

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>();
        for (int k = 0; k + 1 < argv.length; k += 2) {
            if (!argv[k].startsWith("--")) usage("unexpected " + argv[k]);
            args.put(argv[k].substring(2), argv[k + 1]);
        }
        if (argv.length % 2 != 0) usage("missing value for " + argv[argv.length - 1]);
        String caseName = args.getOrDefault("case", "");
        int p = Integer.parseInt(args.getOrDefault("parallelism", "1"));
        long count = Long.parseLong(args.getOrDefault("count", "1000000"));
        long seed = Long.parseUnsignedLong(args.getOrDefault("seed", Long.toString(SEED)));
        String state = args.getOrDefault("state", "heap");
        String output = args.get("output");
        if (output == null) usage("--output is required");

        String input = args.get("input");
        long warmup = Long.parseLong(args.getOrDefault("warmup", "0"));

        if (warmup > 0) {
            // A first, unmeasured job of `warmup` records in this JVM, so that the measured job
            // runs JIT-compiled code, as a long-running Flink job would.
            StreamExecutionEnvironment env = environment(p, state);
            pipeline(env, caseName, seed, warmup, input, warmup).sinkTo(new JsonLinesSink("/dev/null"));
            env.execute("eddy-baseline warm-up " + caseName);
            Meter.reset();
        }
        StreamExecutionEnvironment env = environment(p, state);
        pipeline(env, caseName, seed, count, input, Long.MAX_VALUE)
                .sinkTo(new JsonLinesSink(output)).name("json-lines-sink");
        env.execute("eddy-baseline " + caseName);

        System.out.println(Meter.report(caseName, p, state));
        concatParts(output, p);
        if (rocksDir != null) {
            try (var files = Files.walk(rocksDir)) {
                files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
            }
        }
    }

    /** The case's job on env; fileLimit bounds the lines file-count reads (for the warm-up). */
    static DataStream<String> pipeline(StreamExecutionEnvironment env, String caseName, long seed, long count,
            String input, long fileLimit) {
        DataStream<String> results;
        // A case name ending in -sql runs the Flink SQL version of the case.
        boolean sql = caseName.endsWith("-sql");
        String base = sql ? caseName.substring(0, caseName.length() - 4) : caseName;
        Sql tables = sql ? new Sql(env) : null;
        switch (base) {
            case "keyed-count": {
                DataStream<Click> clicks = clicks(env, seed, count);
                results = sql ? tables.keyedCount(clicks) : keyedCount(clicks);
                break;
            }
            case "file-count": {
                if (input == null) usage("file-count needs --input FILE");
                DataStream<Click> clicks = env.fromSource(new Sources.JsonLinesClickSource(input, fileLimit),
                        WatermarkStrategy.<Click>forMonotonousTimestamps().withTimestampAssigner((c, t) -> c.ts),
                        "json-lines");
                results = sql ? tables.keyedCount(clicks) : keyedCount(clicks);
                break;
            }
            case "q5": {
                DataStream<Bid> bids = nexmark(env, seed, count, Kind.BID);
                results = sql ? tables.q5(bids) : q5(bids);
                break;
            }
            case "q7": {
                DataStream<Bid> bids = nexmark(env, seed, count, Kind.BID);
                results = sql ? tables.q7(bids) : q7(bids);
                break;
            }
            case "q8": {
                DataStream<Person> persons = nexmark(env, seed, count, Kind.PERSON);
                DataStream<Auction> auctions = nexmark(env, seed, count, Kind.AUCTION);
                results = sql ? tables.q8(persons, auctions) : q8(persons, auctions);
                break;
            }
            default:
                usage("unknown case '" + caseName + "'");
                return null;
        }
        return results;
    }
    static void usage(String why) {
        System.err.println("EddyBaseline: " + why);
        System.err.println("usage: EddyBaseline --case keyed-count|q5|q7|q8|file-count[-sql] --parallelism P"
                + " --output FILE [--count N] [--seed 42] [--state heap|rocksdb] [--input FILE] [--warmup N]");
        System.exit(2);
    }

    /** RocksDB's working directory, removed when the job is done. */
    static Path rocksDir;

    static StreamExecutionEnvironment environment(int p, String state) throws Exception {
        Map<String, String> c = new HashMap<>();
        switch (state) {
            case "heap":
                c.put("state.backend.type", "hashmap");
                break;
            case "rocksdb":
                c.put("state.backend.type", "rocksdb");
                if (rocksDir == null) rocksDir = Files.createTempDirectory("eddy-flink-rocksdb");
                c.put("state.backend.rocksdb.localdir", rocksDir.toString());
                break;
            default:
                usage("unknown state backend " + state);
        }
        c.put("taskmanager.numberOfTaskSlots", Integer.toString(p));
        // RocksDB takes its block cache and write buffers from managed memory.
        c.put("taskmanager.memory.managed.size", "1g");
        c.put("pipeline.object-reuse", "true");
        // A local job should not spend time on the web UI or metric reporting.
        c.put("rest.port", "0");
        StreamExecutionEnvironment env =
                StreamExecutionEnvironment.createLocalEnvironment(p, Configuration.fromMap(c));
        env.getConfig().enableObjectReuse();
        return env;
    }

    static DataStream<Click> clicks(StreamExecutionEnvironment env, long seed, long count) {
        // keyed-count input: keys 10000, maxDisorder 0 (monotonous per split), 1000 events/s.
        Generators.ClickGen gen = new Generators.ClickGen(seed, 10000, 1000, START, 0);
        return env.fromSource(new Sources.ClickSource(gen, count),
                WatermarkStrategy.<Click>forMonotonousTimestamps().withTimestampAssigner((c, t) -> c.ts),
                "generator");
    }

    static <T> DataStream<T> nexmark(StreamExecutionEnvironment env, long seed, long count, Kind kind) {
        Generators.NexmarkGen gen = new Generators.NexmarkGen(seed, 10000, START);
        WatermarkStrategy<T> wm = WatermarkStrategy.<T>forMonotonousTimestamps().withTimestampAssigner(
                (e, t) -> e instanceof Bid ? ((Bid) e).dateTime
                        : e instanceof Person ? ((Person) e).dateTime : ((Auction) e).dateTime);
        return env.fromSource(new Sources.NexmarkSource<T>(gen, count, kind), wm,
                "nexmark-" + kind.name().toLowerCase());
    }

    // ------------------------------------------------------------------ keyed-count, file-count

    /** Per user and 10 s tumbling window: {user, window_start, window_end, count}. */
    static DataStream<String> keyedCount(DataStream<Click> clicks) {
        return clicks.keyBy(c -> c.user, Types.STRING)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                .aggregate(new CountAgg<>(), new EmitUserCount())
                .name("keyed-count");
    }

    /** A mutable accumulator: with heap state it is updated in place, not allocated per record. */
    public static final class Acc {
        public long v;
        public long id;

        public Acc() {}
    }

    public static final class CountAgg<T> implements AggregateFunction<T, Acc, Acc> {
        @Override public Acc createAccumulator() { return new Acc(); }
        @Override public Acc add(T value, Acc acc) { acc.v++; return acc; }
        @Override public Acc getResult(Acc acc) { return acc; }
        @Override public Acc merge(Acc a, Acc b) { a.v += b.v; return a; }
    }

    static final class EmitUserCount extends ProcessWindowFunction<Acc, String, String, TimeWindow> {
        @Override
        public void process(String user, Context ctx, Iterable<Acc> counts, Collector<String> out) {
            StringBuilder b = new StringBuilder(96).append("{\"user\":");
            Generators.Json.str(b, user);
            b.append(",\"window_start\":").append(ctx.window().getStart())
                    .append(",\"window_end\":").append(ctx.window().getEnd())
                    .append(",\"count\":").append(counts.iterator().next().v).append('}');
            out.collect(b.toString());
        }
    }

    // ------------------------------------------------------------------ q5

    /** Bids per auction per sliding window, as a POJO between the two stages. */
    public static final class AuctionCount {
        public long windowStart;
        public long windowEnd;
        public long auction;
        public long count;

        public AuctionCount() {}
    }

    /**
     * Per sliding window (10 s, slide 2 s) the auction with the most bids, ties to the smaller id:
     * {window_start, window_end, auction, count}. Stage 1 counts per auction and window; stage 2
     * keys by window and keeps the best. Stage-1 results carry the timestamp window_end - 1, so
     * the 2 s tumbling window of stage 2 holds exactly one sliding window's counts.
     */
    static DataStream<String> q5(DataStream<Bid> bids) {
        return bids.keyBy(b -> b.auction, Types.LONG)
                .window(SlidingEventTimeWindows.of(Duration.ofSeconds(10), Duration.ofSeconds(2)))
                .aggregate(new CountAgg<>(), new EmitAuctionCount())
                .name("q5-count")
                .keyBy(ac -> ac.windowStart, Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(2)))
                .aggregate(new HottestAgg(), new EmitHottest())
                .name("q5-hottest");
    }

    static final class EmitAuctionCount extends ProcessWindowFunction<Acc, AuctionCount, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<Acc> counts, Collector<AuctionCount> out) {
            AuctionCount ac = new AuctionCount();
            ac.windowStart = ctx.window().getStart();
            ac.windowEnd = ctx.window().getEnd();
            ac.auction = auction;
            ac.count = counts.iterator().next().v;
            out.collect(ac);
        }
    }

    /** Keeps the (auction, count) with the highest count, ties to the smaller auction id. */
    public static final class HottestAgg implements AggregateFunction<AuctionCount, Acc, Acc> {
        @Override public Acc createAccumulator() { Acc a = new Acc(); a.v = -1; return a; }

        @Override
        public Acc add(AuctionCount ac, Acc best) {
            if (ac.count > best.v || (ac.count == best.v && ac.auction < best.id)) {
                best.v = ac.count;
                best.id = ac.auction;
            }
            return best;
        }

        @Override public Acc getResult(Acc best) { return best; }

        @Override
        public Acc merge(Acc a, Acc b) {
            return b.v > a.v || (b.v == a.v && b.id < a.id) ? b : a;
        }
    }

    static final class EmitHottest extends ProcessWindowFunction<Acc, String, Long, TimeWindow> {
        @Override
        public void process(Long windowStart, Context ctx, Iterable<Acc> bests, Collector<String> out) {
            Acc best = bests.iterator().next();
            out.collect(q5Json(windowStart, windowStart + 10_000, best.id, best.v));
        }
    }

    static String q5Json(long windowStart, long windowEnd, long auction, long count) {
        return "{\"window_start\":" + windowStart + ",\"window_end\":" + windowEnd
                + ",\"auction\":" + auction + ",\"count\":" + count + "}";
    }

    // ------------------------------------------------------------------ q7

    /**
     * Per 10 s tumbling window the highest bid price: {window_start, window_end, price}. Keyed by
     * the window's start so the window's state is one value per window.
     */
    static DataStream<String> q7(DataStream<Bid> bids) {
        return bids.keyBy(b -> b.dateTime - Math.floorMod(b.dateTime, 10_000L), Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                .aggregate(new MaxPriceAgg(), new EmitMaxPrice())
                .name("q7");
    }

    public static final class MaxPriceAgg implements AggregateFunction<Bid, Acc, Acc> {
        @Override public Acc createAccumulator() { Acc a = new Acc(); a.v = Long.MIN_VALUE; return a; }
        @Override public Acc add(Bid b, Acc acc) { if (b.price > acc.v) acc.v = b.price; return acc; }
        @Override public Acc getResult(Acc acc) { return acc; }
        @Override public Acc merge(Acc a, Acc b) { a.v = Math.max(a.v, b.v); return a; }
    }

    static final class EmitMaxPrice extends ProcessWindowFunction<Acc, String, Long, TimeWindow> {
        @Override
        public void process(Long key, Context ctx, Iterable<Acc> maxes, Collector<String> out) {
            out.collect("{\"window_start\":" + ctx.window().getStart() + ",\"window_end\":" + ctx.window().getEnd()
                    + ",\"price\":" + maxes.iterator().next().v + "}");
        }
    }

    // ------------------------------------------------------------------ q8

    /**
     * Per 10 s tumbling window every (person, auction) with auction.seller == person.id, both in
     * that window: {window_start, window_end, id, name, auction}. A window join; the window is
     * recomputed from the person's time (both sides are in the same aligned window).
     */
    static DataStream<String> q8(DataStream<Person> persons, DataStream<Auction> auctions) {
        return persons.join(auctions)
                .where(p -> p.id, Types.LONG)
                .equalTo(a -> a.seller, Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                .apply(new Q8Join(), Types.STRING)
                .name("q8");
    }

    static final class Q8Join implements JoinFunction<Person, Auction, String> {
        @Override
        public String join(Person p, Auction a) {
            long start = p.dateTime - Math.floorMod(p.dateTime, 10_000L);
            StringBuilder b = new StringBuilder(128)
                    .append("{\"window_start\":").append(start)
                    .append(",\"window_end\":").append(start + 10_000)
                    .append(",\"id\":").append(p.id)
                    .append(",\"name\":");
            Generators.Json.str(b, p.name);
            return b.append(",\"auction\":").append(a.id).append('}').toString();
        }
    }

    // ------------------------------------------------------------------ output

    /** With P > 1 each sink subtask wrote PATH.part-K: join them into PATH (after the measurement). */
    static void concatParts(String output, int p) throws Exception {
        if (p == 1 || output.startsWith("/dev/")) return;
        try (OutputStream out = new FileOutputStream(output)) {
            for (int k = 0; k < p; k++) {
                Path part = Path.of(JsonLinesSink.partPath(output, k, p));
                Files.copy(part, out);
                Files.delete(part);
            }
        }
    }
}

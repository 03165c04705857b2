package eddy.bench;

import java.time.LocalDateTime;
import java.time.ZoneOffset;

import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.types.Row;

import eddy.gen.Generators;
import eddy.gen.Generators.Auction;
import eddy.gen.Generators.Bid;
import eddy.gen.Generators.Click;
import eddy.gen.Generators.Person;

/**
 * The cases in Flink SQL (window table-valued functions), the other way Flink users write them;
 * the planner's window operators differ from the DataStream ones (in-memory combining before
 * state, local/global aggregation, one timer per window), so either can be the faster. The
 * tables are views over the same DataStream sources, with their watermarks (SOURCE_WATERMARK()).
 */
final class Sql {
    private final StreamTableEnvironment tEnv;

    Sql(StreamExecutionEnvironment env) {
        tEnv = StreamTableEnvironment.create(env);
        // Window bounds come out as TIMESTAMP(3) in the session time zone: make that UTC so they
        // convert back to epoch milliseconds.
        tEnv.getConfig().set("table.local-time-zone", "UTC");
    }

    private <T> void view(String name, DataStream<T> stream) {
        tEnv.createTemporaryView(name, tEnv.fromDataStream(stream, Schema.newBuilder()
                .columnByMetadata("rowtime", "TIMESTAMP_LTZ(3)")
                .watermark("rowtime", "SOURCE_WATERMARK()")
                .build()));
    }

    private DataStream<Row> query(String sql) {
        return tEnv.toDataStream(tEnv.sqlQuery(sql));
    }

    DataStream<String> keyedCount(DataStream<Click> clicks) {
        view("clicks", clicks);
        return query("SELECT `user`, window_start, window_end, COUNT(*)"
                + " FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))"
                + " GROUP BY `user`, window_start, window_end")
                .map(r -> {
                    StringBuilder b = new StringBuilder(96).append("{\"user\":");
                    Generators.Json.str(b, r.getFieldAs(0));
                    return b.append(",\"window_start\":").append(millis(r.getFieldAs(1)))
                            .append(",\"window_end\":").append(millis(r.getFieldAs(2)))
                            .append(",\"count\":").append(r.<Long>getFieldAs(3)).append('}').toString();
                }, Types.STRING).name("keyed-count-sql-json");
    }

    /** HOP window count per auction, then a window Top-1 (ties to the smaller auction id). */
    DataStream<String> q5(DataStream<Bid> bids) {
        view("bids", bids);
        return query("SELECT window_start, window_end, auction, num FROM ("
                + " SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end"
                + "   ORDER BY num DESC, auction ASC) AS rn FROM ("
                + "  SELECT window_start, window_end, auction, COUNT(*) AS num"
                + "  FROM TABLE(HOP(TABLE bids, DESCRIPTOR(rowtime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"
                + "  GROUP BY window_start, window_end, auction))"
                + " WHERE rn = 1")
                .map(r -> EddyBaseline.q5Json(millis(r.getFieldAs(0)), millis(r.getFieldAs(1)),
                        r.<Long>getFieldAs(2), r.<Long>getFieldAs(3)), Types.STRING)
                .name("q5-sql-json");
    }

    DataStream<String> q7(DataStream<Bid> bids) {
        view("bids", bids);
        return query("SELECT window_start, window_end, MAX(price)"
                + " FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))"
                + " GROUP BY window_start, window_end")
                .map(r -> "{\"window_start\":" + millis(r.getFieldAs(0)) + ",\"window_end\":" + millis(r.getFieldAs(1))
                        + ",\"price\":" + r.<Long>getFieldAs(2) + "}", Types.STRING)
                .name("q7-sql-json");
    }

    /** A window join: both sides windowed by TUMBLE, joined on key and window. */
    DataStream<String> q8(DataStream<Person> persons, DataStream<Auction> auctions) {
        view("persons", persons);
        view("auctions", auctions);
        return query("SELECT P.window_start, P.window_end, P.id, P.name, A.id FROM"
                + " (SELECT * FROM TABLE(TUMBLE(TABLE persons, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))) P"
                + " JOIN"
                + " (SELECT * FROM TABLE(TUMBLE(TABLE auctions, DESCRIPTOR(rowtime), INTERVAL '10' SECOND))) A"
                + " ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end")
                .map(r -> {
                    StringBuilder b = new StringBuilder(128)
                            .append("{\"window_start\":").append(millis(r.getFieldAs(0)))
                            .append(",\"window_end\":").append(millis(r.getFieldAs(1)))
                            .append(",\"id\":").append(r.<Long>getFieldAs(2))
                            .append(",\"name\":");
                    Generators.Json.str(b, r.getFieldAs(3));
                    return b.append(",\"auction\":").append(r.<Long>getFieldAs(4)).append('}').toString();
                }, Types.STRING).name("q8-sql-json");
    }

    static long millis(LocalDateTime t) {
        return t.toInstant(ZoneOffset.UTC).toEpochMilli();
    }
}

package eddy.gen;

/**
 * The deterministic generators of docs/generators.md (GENERATOR_VERSION 1), the Java twin of
 * Eddy's Rust `generator` and `nexmark` sources. Every record is a pure function of
 * (seed, i); all arithmetic is unsigned 64-bit with wrap-around, which Java's long gives us as
 * long as we shift with >>> and divide with Long.divideUnsigned / Long.remainderUnsigned.
 *
 * No dependencies: a Rust test compiles this package with plain javac and compares Dump's output
 * with the Rust implementation.
 */
public final class Generators {
    public static final int GENERATOR_VERSION = 1;
    public static final long DEFAULT_SEED = 42;
    public static final long DEFAULT_START_TIME = 1700000000000L;

    private Generators() {}

    /** The SplitMix64 finaliser. */
    public static long mix64(long x) {
        x += 0x9E3779B97F4A7C15L;
        x = (x ^ (x >>> 30)) * 0xBF58476D1CE4E5B9L;
        x = (x ^ (x >>> 27)) * 0x94D049BB133111EBL;
        return x ^ (x >>> 31);
    }

    /** rand(seed, i, lane) with mix64(seed) precomputed by the caller (it is the same for every i). */
    static long rand(long seedMix, long i, int lane) {
        return mix64(seedMix ^ (i * 16 + lane));
    }

    static long pick(long seedMix, long i, int lane, long n) {
        return Long.remainderUnsigned(rand(seedMix, i, lane), n);
    }

    static long at(long startTime, long eventsPerSecond, long i) {
        return startTime + Long.divideUnsigned(i * 1000, eventsPerSecond);
    }

    // ---------------------------------------------------------------- generator: click events

    /** One click event; public fields and a no-arg constructor so Flink treats it as a POJO. */
    public static final class Click {
        public long id;
        public String user;
        public String page;
        public long amount;
        public long ts;

        public Click() {}

        public String toJson() {
            StringBuilder b = new StringBuilder(80);
            b.append("{\"id\":").append(id);
            b.append(",\"user\":"); Json.str(b, user);
            b.append(",\"page\":"); Json.str(b, page);
            b.append(",\"amount\":").append(amount);
            b.append(",\"ts\":").append(ts).append('}');
            return b.toString();
        }
    }

    /** The `generator` source: click events. */
    public static final class ClickGen implements java.io.Serializable {
        public final long seed, keys, eventsPerSecond, startTime, maxDisorderMs;
        private final long seedMix;

        public ClickGen(long seed, long keys, long eventsPerSecond, long startTime, long maxDisorderMs) {
            this.seed = seed;
            this.keys = keys;
            this.eventsPerSecond = eventsPerSecond;
            this.startTime = startTime;
            this.maxDisorderMs = maxDisorderMs;
            this.seedMix = mix64(seed);
        }

        public Click record(long i) {
            Click c = new Click();
            c.id = i;
            c.user = "u" + Long.toUnsignedString(pick(seedMix, i, 0, keys));
            c.page = "/p/" + pick(seedMix, i, 1, 50);
            c.amount = pick(seedMix, i, 2, 10000);
            long d = maxDisorderMs;
            c.ts = at(startTime, eventsPerSecond, i) - (d == 0 ? 0 : pick(seedMix, i, 3, d + 1));
            return c;
        }
    }

    // ---------------------------------------------------------------- nexmark

    public enum Kind {
        PERSON, AUCTION, BID;

        /** The kind of event i: off == 0 Person, 1..3 Auction, else Bid (1:3:46). */
        public static Kind of(long i) {
            long off = Long.remainderUnsigned(i, 50);
            return off == 0 ? PERSON : off <= 3 ? AUCTION : BID;
        }

        public static Kind parse(String s) {
            switch (s) {
                case "person": return PERSON;
                case "auction": return AUCTION;
                case "bid": return BID;
                default: throw new IllegalArgumentException("unknown nexmark kind " + s);
            }
        }
    }

    static final String[] CITIES = {"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend",
            "Redmond", "Seattle", "Kent", "Cheyenne"};
    static final String[] STATES = {"AZ", "CA", "ID", "OR", "WA", "WY"};
    static final String[] FIRST = {"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah",
            "Deiter", "Walter"};
    static final String[] LAST = {"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones",
            "Noris"};
    static final String[] CHANNELS = {"Google", "Facebook", "Baidu", "Apple"};

    public static final class Person {
        public long id;
        public String name;
        public String emailAddress;
        public String creditCard;
        public String city;
        public String state;
        public long dateTime;

        public Person() {}

        public String toJson() {
            StringBuilder b = new StringBuilder(160);
            b.append("{\"id\":").append(id);
            b.append(",\"name\":"); Json.str(b, name);
            b.append(",\"emailAddress\":"); Json.str(b, emailAddress);
            b.append(",\"creditCard\":"); Json.str(b, creditCard);
            b.append(",\"city\":"); Json.str(b, city);
            b.append(",\"state\":"); Json.str(b, state);
            b.append(",\"dateTime\":").append(dateTime).append('}');
            return b.toString();
        }
    }

    public static final class Auction {
        public long id;
        public String itemName;
        public long initialBid;
        public long reserve;
        public long seller;
        public long category;
        public long dateTime;
        public long expires;

        public Auction() {}

        public String toJson() {
            StringBuilder b = new StringBuilder(160);
            b.append("{\"id\":").append(id);
            b.append(",\"itemName\":"); Json.str(b, itemName);
            b.append(",\"initialBid\":").append(initialBid);
            b.append(",\"reserve\":").append(reserve);
            b.append(",\"seller\":").append(seller);
            b.append(",\"category\":").append(category);
            b.append(",\"dateTime\":").append(dateTime);
            b.append(",\"expires\":").append(expires).append('}');
            return b.toString();
        }
    }

    public static final class Bid {
        public long auction;
        public long bidder;
        public long price;
        public String channel;
        public String url;
        public long dateTime;

        public Bid() {}

        public String toJson() {
            StringBuilder b = new StringBuilder(160);
            b.append("{\"auction\":").append(auction);
            b.append(",\"bidder\":").append(bidder);
            b.append(",\"price\":").append(price);
            b.append(",\"channel\":"); Json.str(b, channel);
            b.append(",\"url\":"); Json.str(b, url);
            b.append(",\"dateTime\":").append(dateTime).append('}');
            return b.toString();
        }
    }

    /** The `nexmark` source. The caller picks the indices of its kind (see Kind.of). */
    public static final class NexmarkGen implements java.io.Serializable {
        public final long seed, eventsPerSecond, startTime;
        private final long seedMix;

        public NexmarkGen(long seed, long eventsPerSecond, long startTime) {
            this.seed = seed;
            this.eventsPerSecond = eventsPerSecond;
            this.startTime = startTime;
            this.seedMix = mix64(seed);
        }

        private long pick(long i, int lane, long n) {
            return Generators.pick(seedMix, i, lane, n);
        }

        public Person person(long i) {
            long epoch = Long.divideUnsigned(i, 50);
            Person p = new Person();
            p.id = 1000 + epoch;
            p.name = FIRST[(int) pick(i, 0, 11)] + " " + LAST[(int) pick(i, 1, 9)];
            p.emailAddress = "p" + p.id + "@example.com";
            // The spec draws one number and repeats it four times.
            String part = Long.toString(1000 + pick(i, 2, 9000));
            p.creditCard = part + " " + part + " " + part + " " + part;
            p.city = CITIES[(int) pick(i, 3, 10)];
            p.state = STATES[(int) pick(i, 4, 6)];
            p.dateTime = at(startTime, eventsPerSecond, i);
            return p;
        }

        public Auction auction(long i) {
            long epoch = Long.divideUnsigned(i, 50);
            long off = Long.remainderUnsigned(i, 50);
            long persons = epoch + 1;
            Auction a = new Auction();
            a.id = 1000 + epoch * 3 + (off - 1);
            a.itemName = "item-" + a.id;
            a.initialBid = 1 + pick(i, 0, 1000);
            a.reserve = a.initialBid + pick(i, 1, 1000);
            a.seller = 1000 + epoch - pick(i, 2, Math.min(persons, 100));
            a.category = 10 + pick(i, 3, 5);
            a.dateTime = at(startTime, eventsPerSecond, i);
            a.expires = a.dateTime + 10000 + pick(i, 4, 20000);
            return a;
        }

        public Bid bid(long i) {
            long epoch = Long.divideUnsigned(i, 50);
            long auctions = epoch * 3 + 3;
            long persons = epoch + 1;
            Bid b = new Bid();
            b.auction = pick(i, 0, 2) == 0
                    ? 1000 + ((auctions - 1) / 100) * 100
                    : 1000 + auctions - 1 - pick(i, 1, Math.min(auctions, 100));
            b.bidder = pick(i, 2, 4) == 0
                    ? 1000 + (epoch / 100) * 100
                    : 1000 + epoch - pick(i, 3, Math.min(persons, 100));
            b.price = 100 + pick(i, 4, 100000);
            b.channel = CHANNELS[(int) pick(i, 5, 4)];
            b.url = "https://nexmark.example/item/" + pick(i, 6, 1000);
            b.dateTime = at(startTime, eventsPerSecond, i);
            return b;
        }
    }

    /** Minimal JSON string writer (the generated strings are plain ASCII, but escape anyway). */
    public static final class Json {
        private Json() {}

        public static void str(StringBuilder b, String s) {
            b.append('"');
            for (int k = 0; k < s.length(); k++) {
                char c = s.charAt(k);
                switch (c) {
                    case '"': b.append("\\\""); break;
                    case '\\': b.append("\\\\"); break;
                    case '\n': b.append("\\n"); break;
                    case '\r': b.append("\\r"); break;
                    case '\t': b.append("\\t"); break;
                    case '\b': b.append("\\b"); break;
                    case '\f': b.append("\\f"); break;
                    default:
                        if (c < 0x20) {
                            b.append(String.format("\\u%04x", (int) c));
                        } else {
                            b.append(c);
                        }
                }
            }
            b.append('"');
        }
    }
}

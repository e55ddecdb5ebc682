-- TPC-H Q13, aggregated below the join to customer by hand
select c_count, count(*) as custdist
from (
    select c_custkey, coalesce(sum(cnt), 0) as c_count
    from customer left outer join
      (select o_custkey, count(o_orderkey) as cnt
       from orders
       where o_comment not like '%special%requests%'
       group by o_custkey) o
      on c_custkey = o_custkey
    group by c_custkey
) as c_orders
group by c_count
order by custdist desc, c_count desc
